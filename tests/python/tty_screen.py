"""Runs a command on a pseudo-terminal of a fixed size and prints the screen it leaves, as a VT100
terminal (pyte) draws it: what an operator sees once progress bars have been drawn and redrawn.

usage: tty_screen.py COLUMNS ROWS COMMAND [ARGS...]
"""
import fcntl
import os
import pty
import struct
import sys
import termios

import pyte

cols, rows = int(sys.argv[1]), int(sys.argv[2])
screen = pyte.Screen(cols, rows)
stream = pyte.ByteStream(screen)
pid, fd = pty.fork()
if pid == 0:
    # The child's terminal has the screen's size, so that its line counting matches ours.
    fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    os.execvp(sys.argv[3], sys.argv[3:])
while True:
    try:
        data = os.read(fd, 65536)
    except OSError:  # EIO: the child closed the terminal
        break
    if not data:
        break
    stream.feed(data)
_, status = os.waitpid(pid, 0)
for line in screen.display:
    if line.strip():
        print(line.rstrip())
sys.exit(os.waitstatus_to_exitcode(status))
