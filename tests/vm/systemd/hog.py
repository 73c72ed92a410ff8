# hog.py [--hold MIB] [--rate MIB_PER_S]: the systemd VM's workload (python3-minimal is in
# the image; the static lowmemd-workload of the busybox bed is not needed here). Holds MIB
# of touched memory, then, with --rate, grows by 4 MiB steps at that rate until killed.
import sys
import time

args = dict(zip(sys.argv[1::2], map(int, sys.argv[2::2])))
# bytes * n fills every page: untouched memory would not count against the machine.
held = [b"\x5a" * (args.get("--hold", 0) << 20)]
rate = args.get("--rate", 0)
while rate:
    held.append(b"\x5a" * (4 << 20))
    time.sleep(4 / rate)
while True:
    time.sleep(3600)
