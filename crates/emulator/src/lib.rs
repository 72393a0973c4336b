//! A local stand-in for Microsoft Graph calls and the Teams media side (work in progress).
