//! The JSON Lines wire types: the public contract documented in docs/events.md and
//! docs/events.schema.json. Fields are only ever added, never renamed or removed.

use serde::Serialize;

mod control;
mod kill;
mod kube;
mod whodunit;

pub use control::*;
pub use kill::*;
pub use kube::*;
pub use whodunit::*;

/// Bumped only if a field ever changes meaning (it never should; additions keep the version).
pub const SCHEMA_VERSION: u32 = 1;

/// A value the stream spells as one of a fixed set of strings: a Rust enum whose JSON names and
/// `as_str` come from one table.
macro_rules! wire_enum {
    ($(#[$m:meta])* pub enum $name:ident { $($(#[$vm:meta])* $var:ident = $s:literal,)+ }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $s)] $var,)+
        }

        impl $name {
            /// The name the stream uses.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$var => $s,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use wire_enum;

/// One line of the stream: its `type` comes from the variant.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Event {
    Start(Box<Start>),
    OomKill(Box<OomKill>),
    Signal(Box<SignalEv>),
    Exit(Box<ExitEv>),
    OomReap(OomReap),
    MemcgOom(MemcgOomEv),
    Lost(Lost),
    Stop(Stop),
}

wire_enum! {
    /// The `type` of a line.
    pub enum EventType {
        Start = "start",
        OomKill = "oom_kill",
        Signal = "signal",
        Exit = "exit",
        OomReap = "oom_reap",
        MemcgOom = "memcg_oom",
        Lost = "lost",
        Stop = "stop",
    }
}

impl Event {
    pub fn event_type(&self) -> EventType {
        match self {
            Self::Start(_) => EventType::Start,
            Self::OomKill(_) => EventType::OomKill,
            Self::Signal(_) => EventType::Signal,
            Self::Exit(_) => EventType::Exit,
            Self::OomReap(_) => EventType::OomReap,
            Self::MemcgOom(_) => EventType::MemcgOom,
            Self::Lost(_) => EventType::Lost,
            Self::Stop(_) => EventType::Stop,
        }
    }

    /// Lines about oomtrace itself, never dropped for backpressure (`start`, `lost`, `stop`).
    pub fn is_control(&self) -> bool {
        matches!(self, Self::Start(_) | Self::Lost(_) | Self::Stop(_))
    }
}

/// Every line: the envelope fields, then the event's own fields.
#[derive(Debug, Serialize)]
pub struct Line<'a> {
    pub schema: u32,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub seq: u64,
    pub time: String,
    pub boot_ns: u64,
    pub host: &'a str,
    #[serde(flatten)]
    pub body: &'a Event,
}

wire_enum! {
    /// How a hook is attached, and the mode records are labelled with.
    pub enum Attach {
        Fentry = "fentry",
        Kprobe = "kprobe",
        TpBtf = "tp_btf",
        Tracepoint = "tracepoint",
    }
}

wire_enum! {
    /// `enum oom_constraint` (include/linux/oom.h, v6.18; unchanged since 2.6.35).
    pub enum Constraint {
        Global = "global",
        Cpuset = "cpuset",
        Mempolicy = "mempolicy",
        Memcg = "memcg",
    }
}

wire_enum! {
    /// Which kernel notification tells of OOMs in a memory cgroup.
    pub enum MemcgOomSource {
        CgroupV1OomControl = "cgroup_v1_oom_control",
        CgroupV2MemoryEvents = "cgroup_v2_memory_events",
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cgroup {
    pub id: u64,
    pub path: Option<String>,
}
