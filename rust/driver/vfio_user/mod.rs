//! A vfio-user client in Rust: the benchmark's stand-in for QEMU's
//! `vfio-user-pci` (QEMU `docs/interop/vfio-user.rst`, protocol 0.1).
//!
//! It speaks to a server the way QEMU does: VERSION, DMA_MAP of a memfd
//! passed with SCM_RIGHTS, region and IRQ info, an mmap of BAR0's
//! sparse-mmap doorbell area, SET_IRQS with eventfds, register accesses as
//! REGION_READ/REGION_WRITE (posted, No_reply, for doorbells, as QEMU posts
//! MMIO writes). [`nvme::NvmeHost`] brings an NVMe controller up on top of
//! it and [`sweep`] drives the benchmark's host loop through it, so the
//! figures measure the server path: socket, shared memory, eventfds.
//!
//! Every message the client sends or receives is counted, so the benchmark
//! can report messages per I/O.

pub mod nvme;
pub mod sweep;

use std::io::{IoSlice, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

/// vfio-user commands this client sends (vfio-user.rst "Commands").
pub mod command {
    pub const VERSION: u16 = 1;
    pub const DMA_MAP: u16 = 2;
    pub const DMA_UNMAP: u16 = 3;
    pub const DEVICE_GET_INFO: u16 = 4;
    pub const DEVICE_GET_REGION_INFO: u16 = 5;
    pub const DEVICE_GET_IRQ_INFO: u16 = 7;
    pub const DEVICE_SET_IRQS: u16 = 8;
    pub const REGION_READ: u16 = 9;
    pub const REGION_WRITE: u16 = 10;
}

const HEADER_SIZE: usize = 16;
const TYPE_MASK: u32 = 0xF;
const TYPE_REPLY: u32 = 1;
const FLAG_NO_REPLY: u32 = 1 << 4;
const FLAG_ERROR: u32 = 1 << 5;
/// Largest reply accepted: a region read of 1 MiB plus headers.
const MAX_REPLY: usize = (1 << 20) + 64;
const MAX_FDS: usize = 16;

/// VFIO PCI region and IRQ indices (linux/vfio.h).
pub const BAR0_REGION: u32 = 0;
pub const CONFIG_REGION: u32 = 7;
pub const MSIX_IRQ: u32 = 2;
const REGION_INFO_FLAG_MMAP: u32 = 1 << 2;
const REGION_INFO_FLAG_CAPS: u32 = 1 << 3;
const CAP_SPARSE_MMAP: u16 = 1;
const IRQ_SET_DATA_EVENTFD: u32 = 1 << 2;
const IRQ_SET_ACTION_TRIGGER: u32 = 1 << 5;
const DMA_FLAG_READ_WRITE: u32 = 0b11;

/// What can go wrong talking to a server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket failed (connect, send, receive).
    #[error("vfio-user socket: {0}")]
    Io(#[from] std::io::Error),
    /// The server answered with an error reply.
    #[error("vfio-user command {command} failed: errno {errno}")]
    Refused { command: u16, errno: u32 },
    /// The server sent something the protocol does not allow here.
    #[error("vfio-user protocol: {0}")]
    Protocol(String),
    /// The NVMe controller behind the server misbehaved.
    #[error("nvme: {0}")]
    Nvme(String),
}

/// One sparse-mmap area of a region (offset and size inside the region).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Area {
    pub offset: u64,
    pub size: u64,
}

/// A DEVICE_GET_REGION_INFO reply.
#[derive(Debug)]
pub struct RegionInfo {
    pub flags: u32,
    pub size: u64,
    /// Offset of the region in `fd`, for mmap.
    pub offset: u64,
    pub areas: Vec<Area>,
    /// The fd to mmap the areas from, when the region offers one.
    pub fd: Option<OwnedFd>,
}

/// A received message: header bytes, payload, fds passed with it.
type Message = ([u8; HEADER_SIZE], Vec<u8>, Vec<OwnedFd>);

/// A connection to a vfio-user server.
pub struct Client {
    sock: UnixStream,
    next_id: AtomicU16,
    /// Messages this client sent (commands, posted writes included).
    pub sent: AtomicU64,
    /// Messages it received (replies and server requests).
    pub received: AtomicU64,
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl Client {
    /// Connects to the server at `path` and negotiates the version.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self, Error> {
        let sock = UnixStream::connect(path)?;
        // A server that stops answering must not hang the benchmark.
        sock.set_read_timeout(Some(timeout))?;
        let c = Client {
            sock,
            next_id: AtomicU16::new(0),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
        };
        c.version()?;
        Ok(c)
    }

    /// Messages sent plus received so far.
    pub fn messages(&self) -> u64 {
        self.sent.load(Ordering::Relaxed) + self.received.load(Ordering::Relaxed)
    }

    fn send(&self, command: u16, flags: u32, payload: &[u8], fds: &[RawFd]) -> Result<u16, Error> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let size = u32::try_from(HEADER_SIZE + payload.len())
            .map_err(|_| Error::Protocol("message too large".into()))?;
        let mut hdr = [0u8; HEADER_SIZE];
        hdr[0..2].copy_from_slice(&id.to_le_bytes());
        hdr[2..4].copy_from_slice(&command.to_le_bytes());
        hdr[4..8].copy_from_slice(&size.to_le_bytes());
        hdr[8..12].copy_from_slice(&flags.to_le_bytes());
        let iov = [IoSlice::new(&hdr), IoSlice::new(payload)];
        if fds.is_empty() {
            let total = hdr.len() + payload.len();
            let n = (&self.sock).write_vectored(&iov)?;
            if n < total {
                let mut all = Vec::with_capacity(total);
                all.extend_from_slice(&hdr);
                all.extend_from_slice(payload);
                (&self.sock).write_all(&all[n..])?;
            }
        } else {
            send_with_fds(&self.sock, &hdr, payload, fds)?;
        }
        self.sent.fetch_add(1, Ordering::Relaxed);
        Ok(id)
    }

    /// Sends a command and waits for its reply: (payload, fds).
    pub fn request(
        &self,
        command: u16,
        payload: &[u8],
        fds: &[RawFd],
    ) -> Result<(Vec<u8>, Vec<OwnedFd>), Error> {
        let id = self.send(command, 0, payload, fds)?;
        loop {
            let (hdr, body, got) = self.receive()?;
            let (msg_id, cmd, flags) = (
                u16::from_le_bytes([hdr[0], hdr[1]]),
                u16::from_le_bytes([hdr[2], hdr[3]]),
                le32(&hdr, 8),
            );
            if flags & TYPE_MASK != TYPE_REPLY {
                // A server request (DMA_READ/WRITE): all our memory is mapped
                // with fds, so a server asking for it is a bug we refuse.
                self.send_error_reply(msg_id, cmd)?;
                continue;
            }
            if msg_id != id || cmd != command {
                return Err(Error::Protocol(format!(
                    "reply {msg_id}/{cmd} to request {id}/{command}"
                )));
            }
            if flags & FLAG_ERROR != 0 {
                return Err(Error::Refused {
                    command,
                    errno: le32(&hdr, 12),
                });
            }
            return Ok((body, got));
        }
    }

    /// Sends a command that wants no reply (a posted write).
    pub fn post(&self, command: u16, payload: &[u8]) -> Result<(), Error> {
        self.send(command, FLAG_NO_REPLY, payload, &[]).map(|_| ())
    }

    fn send_error_reply(&self, msg_id: u16, command: u16) -> Result<(), Error> {
        let mut hdr = [0u8; HEADER_SIZE];
        hdr[0..2].copy_from_slice(&msg_id.to_le_bytes());
        hdr[2..4].copy_from_slice(&command.to_le_bytes());
        hdr[4..8].copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
        hdr[8..12].copy_from_slice(&(TYPE_REPLY | FLAG_ERROR).to_le_bytes());
        hdr[12..16].copy_from_slice(&(libc::EINVAL as u32).to_le_bytes());
        (&self.sock).write_all(&hdr)?;
        self.sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn receive(&self) -> Result<Message, Error> {
        let mut hdr = [0u8; HEADER_SIZE];
        let mut fds = Vec::new();
        recv_with_fds(&self.sock, &mut hdr, &mut fds)?;
        let size = le32(&hdr, 4) as usize;
        if !(HEADER_SIZE..=MAX_REPLY).contains(&size) {
            return Err(Error::Protocol(format!("message size {size}")));
        }
        let mut body = vec![0u8; size - HEADER_SIZE];
        (&self.sock).read_exact(&mut body)?;
        self.received.fetch_add(1, Ordering::Relaxed);
        Ok((hdr, body, fds))
    }

    fn version(&self) -> Result<(), Error> {
        let caps = br#"{"capabilities":{"max_msg_fds":16,"max_data_xfer_size":1048576}}"#;
        let mut p = Vec::with_capacity(4 + caps.len() + 1);
        p.extend_from_slice(&0u16.to_le_bytes());
        p.extend_from_slice(&1u16.to_le_bytes());
        p.extend_from_slice(caps);
        p.push(0);
        let (reply, _) = self.request(command::VERSION, &p, &[])?;
        if reply.len() < 4 || u16::from_le_bytes([reply[0], reply[1]]) != 0 {
            return Err(Error::Protocol("server speaks no vfio-user 0.x".into()));
        }
        Ok(())
    }

    /// DMA_MAP of `size` bytes of `fd` from `offset`, at `iova`, read-write.
    pub fn dma_map(&self, fd: RawFd, offset: u64, iova: u64, size: u64) -> Result<(), Error> {
        let mut p = Vec::with_capacity(32);
        p.extend_from_slice(&32u32.to_le_bytes());
        p.extend_from_slice(&DMA_FLAG_READ_WRITE.to_le_bytes());
        p.extend_from_slice(&offset.to_le_bytes());
        p.extend_from_slice(&iova.to_le_bytes());
        p.extend_from_slice(&size.to_le_bytes());
        self.request(command::DMA_MAP, &p, &[fd]).map(|_| ())
    }

    /// DEVICE_GET_INFO: (flags, regions, irqs).
    pub fn device_info(&self) -> Result<(u32, u32, u32), Error> {
        let mut p = [0u8; 16];
        p[0..4].copy_from_slice(&16u32.to_le_bytes());
        let (r, _) = self.request(command::DEVICE_GET_INFO, &p, &[])?;
        if r.len() < 16 {
            return Err(Error::Protocol("short DEVICE_GET_INFO reply".into()));
        }
        Ok((le32(&r, 4), le32(&r, 8), le32(&r, 12)))
    }

    /// DEVICE_GET_REGION_INFO of region `index`, with its sparse areas.
    pub fn region_info(&self, index: u32) -> Result<RegionInfo, Error> {
        // argsz large enough for the capability chain, as QEMU asks.
        let mut p = [0u8; 32];
        p[0..4].copy_from_slice(&256u32.to_le_bytes());
        p[8..12].copy_from_slice(&index.to_le_bytes());
        let (r, mut fds) = self.request(command::DEVICE_GET_REGION_INFO, &p, &[])?;
        if r.len() < 32 {
            return Err(Error::Protocol("short DEVICE_GET_REGION_INFO reply".into()));
        }
        let flags = le32(&r, 4);
        let mut info = RegionInfo {
            flags,
            size: le64(&r, 16),
            offset: le64(&r, 24),
            areas: Vec::new(),
            fd: fds.pop(),
        };
        if flags & REGION_INFO_FLAG_CAPS != 0 && flags & REGION_INFO_FLAG_MMAP != 0 {
            let mut at = le32(&r, 12) as usize;
            // Walk the chain; offsets are from the start of the info struct.
            let mut hops = 0;
            while at != 0 && at + 8 <= r.len() && hops < 16 {
                let id = u16::from_le_bytes([r[at], r[at + 1]]);
                let next = le32(&r, at + 4) as usize;
                if id == CAP_SPARSE_MMAP && at + 16 <= r.len() {
                    let n = le32(&r, at + 8) as usize;
                    for k in 0..n.min(64) {
                        let a = at + 16 + k * 16;
                        if a + 16 > r.len() {
                            break;
                        }
                        info.areas.push(Area {
                            offset: le64(&r, a),
                            size: le64(&r, a + 8),
                        });
                    }
                }
                at = next;
                hops += 1;
            }
        }
        Ok(info)
    }

    /// DEVICE_GET_IRQ_INFO of IRQ `index`: (flags, count).
    pub fn irq_info(&self, index: u32) -> Result<(u32, u32), Error> {
        let mut p = [0u8; 16];
        p[0..4].copy_from_slice(&16u32.to_le_bytes());
        p[8..12].copy_from_slice(&index.to_le_bytes());
        let (r, _) = self.request(command::DEVICE_GET_IRQ_INFO, &p, &[])?;
        if r.len() < 16 {
            return Err(Error::Protocol("short DEVICE_GET_IRQ_INFO reply".into()));
        }
        Ok((le32(&r, 4), le32(&r, 12)))
    }

    /// SET_IRQS ACTION_TRIGGER DATA_EVENTFD: `fds` on vectors `start..`.
    pub fn set_irq_eventfds(&self, index: u32, start: u32, fds: &[RawFd]) -> Result<(), Error> {
        let mut p = Vec::with_capacity(20);
        p.extend_from_slice(&20u32.to_le_bytes());
        p.extend_from_slice(&(IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER).to_le_bytes());
        p.extend_from_slice(&index.to_le_bytes());
        p.extend_from_slice(&start.to_le_bytes());
        p.extend_from_slice(&(fds.len() as u32).to_le_bytes());
        self.request(command::DEVICE_SET_IRQS, &p, fds).map(|_| ())
    }

    /// REGION_READ of `count` bytes (1..=8) as a little-endian integer.
    pub fn read(&self, region: u32, offset: u64, count: u32) -> Result<u64, Error> {
        let mut p = [0u8; 16];
        p[0..8].copy_from_slice(&offset.to_le_bytes());
        p[8..12].copy_from_slice(&region.to_le_bytes());
        p[12..16].copy_from_slice(&count.to_le_bytes());
        let (r, _) = self.request(command::REGION_READ, &p, &[])?;
        let n = count as usize;
        if r.len() < 16 + n || n > 8 {
            return Err(Error::Protocol("short REGION_READ reply".into()));
        }
        let mut v = [0u8; 8];
        v[..n].copy_from_slice(&r[16..16 + n]);
        Ok(u64::from_le_bytes(v))
    }

    /// REGION_WRITE of the low `count` bytes of `value`; `posted` sends it
    /// with No_reply and does not wait (QEMU's posted MMIO writes).
    pub fn write(
        &self,
        region: u32,
        offset: u64,
        count: u32,
        value: u64,
        posted: bool,
    ) -> Result<(), Error> {
        let n = count.min(8) as usize;
        let mut p = [0u8; 24];
        p[0..8].copy_from_slice(&offset.to_le_bytes());
        p[8..12].copy_from_slice(&region.to_le_bytes());
        p[12..16].copy_from_slice(&(n as u32).to_le_bytes());
        p[16..16 + n].copy_from_slice(&value.to_le_bytes()[..n]);
        if posted {
            self.post(command::REGION_WRITE, &p[..16 + n])
        } else {
            self.request(command::REGION_WRITE, &p[..16 + n], &[])
                .map(|_| ())
        }
    }
}

fn send_with_fds(
    sock: &UnixStream,
    hdr: &[u8],
    payload: &[u8],
    fds: &[RawFd],
) -> Result<(), Error> {
    if fds.len() > MAX_FDS {
        return Err(Error::Protocol(format!("{} fds in one message", fds.len())));
    }
    let mut all = Vec::with_capacity(hdr.len() + payload.len());
    all.extend_from_slice(hdr);
    all.extend_from_slice(payload);
    let fd_bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
    let mut control = vec![0u8; space];
    let mut iov = libc::iovec {
        iov_base: all.as_mut_ptr().cast(),
        iov_len: all.len(),
    };
    // SAFETY: msghdr is plain data; zeroed is a valid empty one.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg_control points at `space` bytes, enough for one cmsg with
    // `fd_bytes` of data (CMSG_SPACE), so CMSG_FIRSTHDR is non-null and
    // CMSG_DATA has room for the fds.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(cmsg), fd_bytes);
    }
    // SAFETY: msg describes valid buffers for the duration of the call.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    let n = n as usize;
    if n < all.len() {
        // The fds went with the first byte; the rest is plain data.
        (&*sock).write_all(&all[n..])?;
    }
    Ok(())
}

/// Reads exactly `buf.len()` bytes, collecting fds passed alongside.
fn recv_with_fds(sock: &UnixStream, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> Result<(), Error> {
    let mut got = 0;
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE((MAX_FDS * 4) as u32) } as usize;
    let mut control = vec![0u8; space];
    while got < buf.len() {
        let mut iov = libc::iovec {
            iov_base: buf[got..].as_mut_ptr().cast(),
            iov_len: buf.len() - got,
        };
        // SAFETY: plain data; zeroed is a valid empty msghdr.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: msg describes valid buffers for the duration of the call.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        if n == 0 {
            return Err(Error::Protocol("server closed the connection".into()));
        }
        // SAFETY: the kernel filled msg_control with well-formed cmsgs of
        // msg_controllen bytes; CMSG_* walk only inside it.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(cmsg);
                    let len = (*cmsg).cmsg_len as usize - (data as usize - cmsg as usize);
                    for k in 0..len / 4 {
                        let fd = std::ptr::read_unaligned(data.add(k * 4).cast::<i32>());
                        fds.push(OwnedFd::from_raw_fd(fd));
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        got += n as usize;
    }
    Ok(())
}
