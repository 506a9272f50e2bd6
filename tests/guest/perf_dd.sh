# QD 1 dd through the guest page cache bypass (O_DIRECT): PERF lines with IOPS.
# Used by hand to compare nvmefast serve with QEMU's -device nvme (README).
i=0; while [ ! -b /dev/nvme0n1 ] && [ $i -lt 20 ]; do sleep 1; i=$((i+1)); done
t() { read a b < /proc/uptime; echo $a; }
for bs in 4k 128k; do
  n=20000; [ $bs = 128k ] && n=2000
  s=$(t); dd if=/dev/nvme0n1 of=/dev/null bs=$bs count=$n iflag=direct 2>/dev/null; e=$(t)
  echo "PERF read bs=$bs n=$n secs=$(awk "BEGIN{print $e-$s}") iops=$(awk "BEGIN{print $n/($e-$s)}")"
done
s=$(t); dd if=/dev/zero of=/dev/nvme0n1 bs=4k count=20000 oflag=direct 2>/dev/null; e=$(t)
echo "PERF write bs=4k n=20000 secs=$(awk "BEGIN{print $e-$s}") iops=$(awk "BEGIN{print 20000/($e-$s)}")"
