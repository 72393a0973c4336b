#!/usr/bin/env python3
"""Kernel time per MB of two ways of writing many WAV recordings at once.

Replays the write pattern of N open 48 kHz mono tracks, round-robin in 20 ms frames (1920
bytes), with a checkpoint per second of audio, and prints the system time per MB written:

  before   a 44-byte header, then 32 KiB writes 44 bytes off the 32 KiB boundaries, and a
           flush of the partial buffer at each checkpoint (a BufWriter; mediabot before the
           aligned writer)
  aligned  32 KiB writes on 32 KiB boundaries (the header is the start of the first), and
           checkpoints that rewrite only the header (`crates/engine/src/sinks/wav.rs`)

Only the syscalls are replayed (no audio), so the figure is the kernel's: page cache, the
file system's block reservation, the copy. Run it on the disk the recordings go to, pinned to
one CPU, alternating the modes:

  for i in 1 2 3; do for m in before aligned; do sync; taskset -c 1 \
      python3 scripts/wav-write-pattern.py $m --dir /path/on/that/disk; done; done
"""
import argparse
import os
import resource
import shutil

CHUNK = 32 * 1024
FRAME = 1920
HEADER = 44


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('mode', choices=['before', 'aligned'])
    ap.add_argument('--files', type=int, default=500)
    ap.add_argument('--secs', type=int, default=4, help='seconds of audio per file')
    ap.add_argument('--dir', default='wav-write-pattern.tmp')
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=False)
    try:
        run(a)
    finally:
        shutil.rmtree(a.dir)


def run(a):
    n = a.files
    fds = [os.open(f'{a.dir}/f{i}.wav', os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
           for i in range(n)]
    header = b'RIFF' + bytes(HEADER - 4)
    data = bytes(CHUNK)
    for fd in fds:
        os.pwrite(fd, header, 0)
    aligned = a.mode == 'aligned'
    # before: `start` is the file offset of the buffer, `fill` its bytes.
    # aligned: `start` is the chunk's offset, `fill` its bytes (the header's included).
    start = [0 if aligned else HEADER] * n
    fill = [HEADER if aligned else 0] * n
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(a.secs):
        for _ in range(50):
            for i in range(n):
                fill[i] += FRAME
                if fill[i] >= CHUNK:
                    os.pwrite(fds[i], data, start[i])
                    start[i] += CHUNK
                    fill[i] -= CHUNK
        for i in range(n):
            if not aligned and fill[i]:
                os.pwrite(fds[i], data[:fill[i]], start[i])
                start[i] += fill[i]
                fill[i] = 0
            os.pwrite(fds[i], header, 0)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    for fd in fds:
        os.close(fd)
    mb = a.secs * 50 * n * FRAME / 1048576
    print(f'{a.mode:8} {n} files: system {1000 * (r1.ru_stime - r0.ru_stime) / mb:.3f} ms/MB '
          f'({mb:.0f} MB)')


if __name__ == '__main__':
    main()
