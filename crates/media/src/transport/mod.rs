//! WebRTC/WHIP transport: one shared UDP port for all calls (work in progress).
