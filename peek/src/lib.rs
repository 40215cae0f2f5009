//! `peek`: see every packet a program sends, without root.
//!
//! ```text
//! cargo run -p peek -- target/debug/tcp-echo          # the demo's connections as ladders
//! cargo run -p peek -- --pcap /tmp/e.pcap --layers 4 -- target/debug/tcp-echo
//! cargo run -p peek -- read /tmp/e.pcap                 # draw a saved capture
//! ```
//!
//! The map, one idea per module:
//!
//! | module | shows |
//! | --- | --- |
//! | [`namespace`] | a private network: user + network namespaces, `lo` up by ioctl |
//! | [`capture`] | an `AF_PACKET` socket on `lo`: each packet once, bounded |
//! | [`parse`] | bytes to headers with `etherparse`, never trusting them |
//! | [`flow`] | packets into connections; relative numbers, how each ended |
//! | [`ladder`] | the ladder diagram and summary as text |
//! | [`svg`] | the same ladder as an SVG picture |
//! | [`layers`] | one packet as an annotated hex dump, layer by layer |
//! | [`pcap`] | the capture file tcpdump and Wireshark open |

pub mod capture;
pub mod flow;
pub mod ladder;
pub mod layers;
pub mod namespace;
pub mod parse;
pub mod pcap;
pub mod svg;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use capture::Frame;
use parse::Packet;

/// What to show of a capture, live or from a file.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub svg: Option<PathBuf>,
    pub layers: Option<usize>,
    pub filter: Option<u16>,
    /// Loopback's MTU, known for live captures only.
    pub mtu: Option<u32>,
}

/// Parse every frame (numbered from 1) and print the ladders, summaries,
/// and whatever `view` asks for, to `out`.
pub fn report(frames: &[Frame], view: &View, out: &mut dyn std::io::Write) -> Result<()> {
    let packets: Vec<Packet> = frames
        .iter()
        .enumerate()
        .map(|(i, f)| parse::parse(i + 1, f.ts, f.wire_len, &f.data))
        .collect();
    let t0 = packets.first().map_or(Duration::ZERO, |p| p.ts);
    let (convs, loose) = flow::conversations(&packets, view.filter);
    for c in &convs {
        writeln!(out, "{}", ladder::render(c, &packets, t0, view.mtu))?;
    }
    write!(out, "{}", ladder::loose(&loose, &packets, t0))?;
    if let Some(n) = view.layers {
        match (
            frames.get(n.wrapping_sub(1)),
            packets.get(n.wrapping_sub(1)),
        ) {
            (Some(f), Some(p)) => writeln!(out, "\n{}", layers::dump(p, &f.data))?,
            _ => writeln!(
                out,
                "note: --layers {n}: the capture has {} packets",
                frames.len()
            )?,
        }
    }
    if let Some(path) = &view.svg {
        svg::draw(path, &convs, &packets, t0)?;
        writeln!(out, "ladder drawn to {}", path.display())?;
    }
    Ok(())
}
