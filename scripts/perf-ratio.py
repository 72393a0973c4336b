#!/usr/bin/env python3
"""Bot samples over libopus samples in a cpu-clock profile of the bot's core.

Both sides are measured in the same seconds, so the VM's speed of the minute moves them
together, which CPU-time ratios taken minutes apart do not have. It is lower than the bot's CPU
over the floor: libopus runs 12-18 % slower inside the bot than in the back-to-back floor,
mostly from idling between wake-ups (docs/performance.md, "what idling costs"). Input: `perf script -F comm,tid,ip,sym,dso` of a
`perf record -e cpu-clock -C <bot cpu> -a` (scripts/perf-ratio.sh makes one).

Bot threads: mediabot-udp (the media thread), sink-* (recorders, feeds), tokio*, media-events.
libopus: the C decoder's own symbols (silk_*, celt_*, opus_*, ec_*, ...), by leaf symbol.
"""
import re
import sys

OPUS_PREFIXES = (
    'silk', 'celt', 'opus', 'ec_', 'clt_', 'quant', 'exp_rot', 'deemph', 'decode_pulses',
    'comb_filter', 'alg_unquant', 'tf_decode', 'unquant', 'anti_coll', 'denormal', 'compute_',
    'renormal', 'haar1', 'spreading', 'interp_bits', 'xcorr', 'NLSF', 'LPC', 'shell', '_celt',
    'stereo', 'pitch', 'kf_', 'mdct', 'deinterleave_hadamard', 'init_caps',
)
NOT_OPUS = ('<', 'mediabot', 'rtc', 'core', 'std', 'tokio', 'alloc', 'hashbrown')
LINE = re.compile(r'\s*(\S+)\s+\d+\s+\S+\s+(.*)\s+\((.*)\)\s*$')


def is_bot(comm):
    return (comm == 'mediabot-udp' or comm.startswith('sink-') or comm.startswith('tokio')
            or comm == 'media-events' or comm == 'fsync')


def is_opus(sym, dso):
    if 'kernel' in dso or 'libc' in dso or sym.startswith(NOT_OPUS):
        return False
    return any(sym.startswith(p) or p in sym[:30] for p in OPUS_PREFIXES)


def main(path, label):
    total = bot = media = opus = 0
    for line in open(path, errors='replace'):
        m = LINE.match(line.rstrip())
        if not m:
            continue
        comm, sym, dso = m.groups()
        total += 1
        if not is_bot(comm):
            continue
        bot += 1
        media += comm == 'mediabot-udp'
        opus += is_opus(sym, dso)
    if opus == 0:
        sys.exit(f'{path}: no libopus samples (was the bot running at 48 or 16 kHz decode?)')
    print(f'{label:14} bot/libopus {bot / opus:.3f}  media/libopus {media / opus:.3f}  '
          f'rest/libopus {(bot - media) / opus:.3f}  '
          f'(samples: all {total}, bot {bot}, libopus {opus})')


if __name__ == '__main__':
    if len(sys.argv) not in (2, 3):
        sys.exit('usage: perf-ratio.py <perf script output> [label]')
    main(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else sys.argv[1])
