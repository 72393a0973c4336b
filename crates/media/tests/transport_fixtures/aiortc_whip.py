"""Scripted WHIP sender built on aiortc: pushes two known synthetic audio signals (two tracks,
two SSRCs = two speakers) to a WHIP endpoint, then DELETEs the session.

usage: aiortc_whip.py WHIP_URL TOKEN SECONDS SSRC1 SSRC2

Loopback only: aioice is told that 127.0.0.1 is the host's only address.
Signals (must match transport_interop_aiortc.rs): speaker k has a linear chirp that repeats
every PERIOD seconds, from F0[k] to F1[k] Hz, amplitude 0.4.
"""
import asyncio
import fractions
import math
import sys
import time
import urllib.request
import urllib.parse

import aioice.ice
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
import av

aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]

RATE = 48000
FRAME = 960  # 20 ms
PERIOD = 1.0
F0 = [300.0, 2400.0]
F1 = [2400.0, 300.0]


def signal(k, start, n):
    t = (np.arange(start, start + n) % int(PERIOD * RATE)) / RATE
    phase = 2 * math.pi * (F0[k] * t + (F1[k] - F0[k]) * t * t / (2 * PERIOD))
    return 0.4 * np.sin(phase)


class Chirp(MediaStreamTrack):
    kind = "audio"

    def __init__(self, k, seconds):
        super().__init__()
        self.k = k
        self.n = 0
        self.total = int(seconds * RATE)
        self.t0 = None

    async def recv(self):
        if self.t0 is None:
            self.t0 = time.monotonic()
        if self.n >= self.total:
            # Past the end: silence, so the stream stays up until we hang up.
            samples = np.zeros(FRAME)
        else:
            samples = signal(self.k, self.n, FRAME)
        wait = self.t0 + self.n / RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        pcm = (samples * 32767).astype("<i2").reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self.n
        frame.time_base = fractions.Fraction(1, RATE)
        self.n += FRAME
        return frame


def http(method, url, token, body=None):
    req = urllib.request.Request(url, data=body, method=method)
    req.add_header("Authorization", "Bearer " + token)
    if body is not None:
        req.add_header("Content-Type", "application/sdp")
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, r.headers.get("Location"), r.read().decode()


async def main():
    url, token, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    ssrcs = [int(sys.argv[4]), int(sys.argv[5])]
    pc = RTCPeerConnection()
    for k in range(2):
        sender = pc.addTrack(Chirp(k, seconds))
        sender._ssrc = ssrcs[k]
    for t in pc.getTransceivers():
        t.direction = "sendonly"
    await pc.setLocalDescription(await pc.createOffer())
    loop = asyncio.get_running_loop()
    status, headers, answer = await loop.run_in_executor(
        None, http, "POST", url, token, pc.localDescription.sdp.encode())
    if status != 201:
        raise SystemExit(f"WHIP POST answered {status}")
    location = urllib.parse.urljoin(url, headers)
    print(f"aiortc: session {location}", flush=True)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    deadline = time.monotonic() + 30
    while pc.connectionState != "connected":
        if time.monotonic() > deadline or pc.connectionState == "failed":
            print("OFFER:\n" + pc.localDescription.sdp + "\nANSWER:\n" + answer, file=sys.stderr)
            raise SystemExit(f"aiortc: not connected ({pc.connectionState})")
        await asyncio.sleep(0.05)
    print("aiortc: connected", flush=True)
    await asyncio.sleep(seconds + 0.5)
    # What aiortc made of the bot's RTCP reception reports (one entry per sender it got a
    # report block for; the round trip only when the block's LSR matches its last SR).
    for s in (await pc.getStats()).values():
        if s.type == "remote-inbound-rtp":
            rtt = "none" if s.roundTripTime is None else f"{s.roundTripTime:.4f}"
            print(f"aiortc: remote-inbound lost={s.packetsLost} rtt={rtt}", flush=True)
    status, _, _ = await loop.run_in_executor(None, http, "DELETE", location, token)
    print(f"aiortc: DELETE {status}", flush=True)
    await pc.close()


asyncio.run(main())
