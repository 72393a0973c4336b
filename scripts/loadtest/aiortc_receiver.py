"""An independent WHIP receiver built on aiortc, for the load test's side-by-side baseline.

It does the receive work a Python transcription bot does with aiortc: for every incoming
audio track, `await track.recv()` (aiortc's jitter buffer and libopus decode, via PyAV) and
`av.AudioResampler` to 16 kHz mono s16, counting frames. Nothing is written to disk.

usage: aiortc_receiver.py PORT
  POST   /whip          SDP offer (application/sdp) -> 201 + answer + Location
  DELETE /whip/{id}     closes that peer connection
  GET    /stats         {"pcs": n, "tracks": n, "frames": n, "resampled": n}

Loopback only: aioice is told that 127.0.0.1 is the host's only address. Prints
"listening PORT" on stdout once it serves.
"""
import asyncio
import itertools
import json
import sys

import aioice.ice
import av
from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]

STATS = {"pcs": 0, "tracks": 0, "frames": 0, "resampled": 0}
PCS = {}
IDS = itertools.count(1)


async def consume(track):
    STATS["tracks"] += 1
    resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
    try:
        while True:
            frame = await track.recv()
            STATS["frames"] += 1
            for out in resampler.resample(frame):
                STATS["resampled"] += out.samples
    except MediaStreamError:
        pass


async def whip(request):
    offer = await request.text()
    pc = RTCPeerConnection()
    pc_id = str(next(IDS))
    PCS[pc_id] = pc
    STATS["pcs"] += 1

    @pc.on("track")
    def on_track(track):
        if track.kind == "audio":
            asyncio.ensure_future(consume(track))

    await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
    answer = await pc.createAnswer()
    await pc.setLocalDescription(answer)
    return web.Response(
        status=201,
        text=pc.localDescription.sdp,
        content_type="application/sdp",
        headers={"Location": f"/whip/{pc_id}"},
    )


async def delete(request):
    pc = PCS.pop(request.match_info["id"], None)
    if pc is None:
        return web.Response(status=404)
    await pc.close()
    return web.Response(status=200)


async def stats(_request):
    return web.Response(text=json.dumps(STATS), content_type="application/json")


async def main():
    port = int(sys.argv[1])
    app = web.Application()
    app.router.add_post("/whip", whip)
    app.router.add_delete("/whip/{id}", delete)
    app.router.add_get("/stats", stats)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"listening {port}", flush=True)
    while True:
        await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main())
