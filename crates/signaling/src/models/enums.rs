//! Graph v1.0 communications enums. Every enum parses case-insensitively and keeps values it
//! does not know in `Unknown(String)`, so a new service value never fails a whole payload.

graph_enum! {
    /// `callState`: where a call is in its lifecycle. `ringing` is tolerated although the
    /// v1.0 CSDL omits it (the docs and the beta metadata list it).
    CallState {
        /// An incoming call the bot has not answered yet.
        Incoming = "incoming",
        /// The call is being set up.
        Establishing = "establishing",
        /// The far end is ringing (docs and beta only).
        Ringing = "ringing",
        /// The call is up; media flows.
        Established = "established",
        /// The call is on hold.
        Hold = "hold",
        /// A transfer is in progress.
        Transferring = "transferring",
        /// The transfer target accepted.
        TransferAccepted = "transferAccepted",
        /// A redirect is in progress.
        Redirecting = "redirecting",
        /// The call is being torn down.
        Terminating = "terminating",
        /// The call has ended.
        Terminated = "terminated",
        /// Graph's evolvable-enum sentinel.
        UnknownFutureValue = "unknownFutureValue",
    }
}

graph_enum! {
    /// `modality`: a kind of media in a call.
    Modality {
        /// Unknown modality (listed in the docs).
        Unspecified = "unknown",
        /// Audio.
        Audio = "audio",
        /// Main video.
        Video = "video",
        /// Video-based screen sharing (VBSS).
        VideoBasedScreenSharing = "videoBasedScreenSharing",
        /// Data.
        Data = "data",
        /// Graph's evolvable-enum sentinel.
        UnknownFutureValue = "unknownFutureValue",
    }
}

graph_enum! {
    /// `mediaDirection`: which way a media stream flows.
    MediaDirection {
        /// No media flows.
        Inactive = "inactive",
        /// Send only.
        SendOnly = "sendOnly",
        /// Receive only.
        ReceiveOnly = "receiveOnly",
        /// Both ways.
        SendReceive = "sendReceive",
    }
}

graph_enum! {
    /// `callDirection`: who placed the call.
    CallDirection {
        /// Placed to the bot.
        Incoming = "incoming",
        /// Placed by the bot.
        Outgoing = "outgoing",
    }
}

graph_enum! {
    /// `tone`: a DTMF tone.
    Tone {
        /// Digit 0.
        Tone0 = "tone0",
        /// Digit 1.
        Tone1 = "tone1",
        /// Digit 2.
        Tone2 = "tone2",
        /// Digit 3.
        Tone3 = "tone3",
        /// Digit 4.
        Tone4 = "tone4",
        /// Digit 5.
        Tone5 = "tone5",
        /// Digit 6.
        Tone6 = "tone6",
        /// Digit 7.
        Tone7 = "tone7",
        /// Digit 8.
        Tone8 = "tone8",
        /// Digit 9.
        Tone9 = "tone9",
        /// `*`.
        Star = "star",
        /// `#`.
        Pound = "pound",
        /// A.
        A = "a",
        /// B.
        B = "b",
        /// C.
        C = "c",
        /// D.
        D = "d",
        /// Hook flash.
        Flash = "flash",
    }
}

graph_enum! {
    /// `recordingStatus`: the compliance-recording state reported for a call or participant.
    RecordingStatus {
        /// Not known.
        Unspecified = "unknown",
        /// Not recording.
        NotRecording = "notRecording",
        /// Recording.
        Recording = "recording",
        /// Recording failed.
        Failed = "failed",
        /// Graph's evolvable-enum sentinel.
        UnknownFutureValue = "unknownFutureValue",
    }
}

graph_enum! {
    /// `screenSharingRole`: whether the bot views or shares screen content.
    ScreenSharingRole {
        /// Viewer.
        Viewer = "viewer",
        /// Sharer.
        Sharer = "sharer",
    }
}

graph_enum! {
    /// `endpointType`: the kind of client a participant uses.
    EndpointType {
        /// A regular client.
        Default = "default",
        /// Voicemail.
        Voicemail = "voicemail",
        /// Skype for Business.
        SkypeForBusiness = "skypeForBusiness",
        /// Skype for Business VoIP phone.
        SkypeForBusinessVoipPhone = "skypeForBusinessVoipPhone",
        /// Graph's evolvable-enum sentinel.
        UnknownFutureValue = "unknownFutureValue",
    }
}

graph_enum! {
    /// `rejectReason`: why the bot rejects an incoming call.
    RejectReason {
        /// No reason given.
        None = "none",
        /// Busy.
        Busy = "busy",
        /// Forbidden.
        Forbidden = "forbidden",
        /// Graph's evolvable-enum sentinel.
        UnknownFutureValue = "unknownFutureValue",
    }
}

graph_enum! {
    /// `routingType`: how a call was retargeted.
    RoutingType {
        /// Forwarded.
        Forwarded = "forwarded",
        /// Looked up.
        Lookup = "lookup",
        /// Self fork.
        SelfFork = "selfFork",
        /// Graph's evolvable-enum sentinel.
        UnknownFutureValue = "unknownFutureValue",
    }
}

graph_enum! {
    /// `routingMode`: how an audio routing group routes media.
    RoutingMode {
        /// One source to one receiver.
        OneToOne = "oneToOne",
        /// One source to many receivers.
        Multicast = "multicast",
    }
}

graph_enum! {
    /// `callTranscriptionState`: whether transcription runs in the call.
    CallTranscriptionState {
        /// Not started.
        NotStarted = "notStarted",
        /// Active.
        Active = "active",
        /// Inactive.
        Inactive = "inactive",
        /// Graph's evolvable-enum sentinel.
        UnknownFutureValue = "unknownFutureValue",
    }
}

graph_enum! {
    /// `mediaState`: whether a modality's media is flowing.
    MediaState {
        /// Flowing.
        Active = "active",
        /// Not flowing.
        Inactive = "inactive",
        /// Graph's evolvable-enum sentinel.
        UnknownFutureValue = "unknownFutureValue",
    }
}

graph_enum! {
    /// `changeType` of a notification.
    ChangeType {
        /// A resource was created.
        Created = "created",
        /// A resource was updated.
        Updated = "updated",
        /// A resource was deleted (also: an operation finished).
        Deleted = "deleted",
    }
}

graph_enum! {
    /// `operationStatus`. Graph documents camelCase but the CSDL has PascalCase members and
    /// invite examples return `"Running"`; parsing ignores case, serialization is camelCase.
    OperationStatus {
        /// Not started.
        NotStarted = "notStarted",
        /// Running; the result arrives by notification.
        Running = "running",
        /// Completed.
        Completed = "completed",
        /// Failed.
        Failed = "failed",
    }
}

graph_enum! {
    /// `sendDtmfCompletionReason` of a `sendDtmfTonesOperation`.
    SendDtmfCompletionReason {
        /// Unknown.
        Unspecified = "unknown",
        /// All tones were sent.
        CompletedSuccessfully = "completedSuccessfully",
        /// Another media operation cancelled this one.
        MediaOperationCanceled = "mediaOperationCanceled",
        /// Graph's evolvable-enum sentinel.
        UnknownFutureValue = "unknownFutureValue",
    }
}

impl CallState {
    /// Lifecycle rank used to refuse backward moves when notifications arrive out of order:
    /// `incoming`/`establishing`/`ringing` < the in-call family (established, hold,
    /// transferring, ...) < `terminating` < `terminated`. `None` for values without a rank.
    pub fn rank(&self) -> Option<u8> {
        match self {
            Self::Incoming => Some(0),
            Self::Establishing => Some(1),
            Self::Ringing => Some(2),
            Self::Established
            | Self::Hold
            | Self::Transferring
            | Self::TransferAccepted
            | Self::Redirecting => Some(3),
            Self::Terminating => Some(4),
            Self::Terminated => Some(5),
            Self::UnknownFutureValue | Self::Unknown(_) => None,
        }
    }

    /// True for `terminated`: nothing moves a call out of it.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Terminated)
    }
}

impl OperationStatus {
    /// True when no further notification will come for the operation.
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Completed | Self::Failed)
    }
}
