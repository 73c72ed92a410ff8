# lmkd_client.py: an lmkd client as Android's ActivityManager talks to lmkd (docs/lmkd.md):
# connects to /run/lmkd (SOCK_SEQPACKET), asks LMK_GETKILLCNT for adj 0..1000 and prints
# the answer's words. Connecting is what makes systemd start lowmemd through lowmemd.socket.
import socket
import struct

LMK_GETKILLCNT = 4
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
# The daemon is started by the connection: give it time on a slow guest.
s.settimeout(60)
s.connect("/run/lmkd")
s.send(struct.pack(">3i", LMK_GETKILLCNT, 0, 1000))
answer = s.recv(64)
print(*struct.unpack(">%di" % (len(answer) // 4), answer))
