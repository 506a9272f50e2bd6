//! The cost of delivering one interrupt through each kind of notifier, on
//! the same `Vectors::notify` path the worker uses.

use std::time::{Duration, Instant};

use crate::irq::{Notifier, Vectors};

/// Mean ns per delivery of `notifier` (with MSI message `address`/`data`
/// for KVM), over `iterations` deliveries or `max_seconds`, whichever ends
/// first.
pub fn notify_cost(
    notifier: Notifier,
    address: u64,
    data: u32,
    iterations: u32,
    max_seconds: f64,
) -> f64 {
    let v = Vectors::new(1, true);
    // Infallible: vector 0 exists.
    let _ = v.set_notifier(0, Some(notifier));
    let _ = v.set_entry(0, address, data, false);
    let limit = Duration::from_secs_f64(max_seconds);
    let start = Instant::now();
    let mut n = 0u32;
    while n < iterations {
        v.notify(0);
        n += 1;
        if n % 256 == 0 && start.elapsed() >= limit {
            break;
        }
    }
    start.elapsed().as_nanos() as f64 / f64::from(n.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::irq::tests::{drain, eventfd};
    use std::os::fd::AsRawFd;

    #[test]
    fn eventfd_cost_counts_every_delivery() {
        let e = eventfd();
        let fd = crate::irq::dup_fd(e.as_raw_fd()).unwrap();
        let ns = notify_cost(Notifier::Eventfd(fd), 0, 0, 1000, 5.0);
        assert!(ns > 0.0);
        assert_eq!(drain(&e), 1000);
    }
}
