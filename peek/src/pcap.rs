//! Capture files in the classic pcap format, the one tcpdump, Wireshark and
//! scapy all read: a 24-byte global header (magic `a1b2c3d4`, version 2.4,
//! the snap length, the link type), then per frame a 16-byte record header
//! (seconds, microseconds, captured length, length on the wire) and the
//! bytes. Loopback frames on Linux carry Ethernet headers, so the link type
//! is `LINKTYPE_ETHERNET` (1).
//!
//! Writing and reading go through the `pcap-file` crate. Reading is done on
//! the raw records, checked here: a file is input like any other, so it is
//! read whole only up to a size bound, and a record may not claim more
//! bytes than the file holds (`pcap-file`'s own slice parser checks that).
//!
//! Try: `target/debug/peek --pcap /tmp/e.pcap -- target/debug/tcp-echo; tcpdump -nn -r /tmp/e.pcap`

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapParser, PcapWriter};
use pcap_file::{DataLink, Endianness, PcapError, TsResolution};

use crate::capture::Frame;

/// Write `frames` to `path`; `snaplen` goes into the header.
pub fn write(path: &Path, frames: &[Frame], snaplen: usize) -> Result<()> {
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let header = PcapHeader {
        version_major: 2,
        version_minor: 4,
        ts_correction: 0,
        ts_accuracy: 0,
        snaplen: u32::try_from(snaplen).unwrap_or(u32::MAX),
        datalink: DataLink::ETHERNET,
        ts_resolution: TsResolution::MicroSecond,
        endianness: Endianness::native(),
    };
    let mut w = PcapWriter::with_header(BufWriter::new(file), header)?;
    for f in frames {
        let orig = u32::try_from(f.wire_len).unwrap_or(u32::MAX);
        w.write_packet(&PcapPacket::new(f.ts, orig, &f.data))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    w.into_writer().flush()?;
    Ok(())
}

/// What a file held: its frames and anything odd about it.
#[derive(Debug, Default)]
pub struct Loaded {
    pub frames: Vec<Frame>,
    pub notes: Vec<String>,
}

/// Read a pcap file of at most `max_bytes` bytes and `max_packets` frames.
pub fn read(path: &Path, max_bytes: usize, max_packets: usize) -> Result<Loaded> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut data = Vec::new();
    file.take(max_bytes as u64 + 1)
        .read_to_end(&mut data)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut loaded = Loaded::default();
    if data.len() > max_bytes {
        data.truncate(max_bytes);
        loaded.notes.push(format!(
            "only the first {max_bytes} bytes of the file were read (--max-bytes)"
        ));
    }
    parse(&data, max_packets, &mut loaded)
        .with_context(|| format!("{} is not a pcap file peek can draw", path.display()))?;
    Ok(loaded)
}

/// Parse a whole pcap image. Public for the property test on arbitrary bytes.
pub fn parse(data: &[u8], max_packets: usize, loaded: &mut Loaded) -> Result<()> {
    let (mut rest, parser) = PcapParser::new(data).map_err(|e| anyhow::anyhow!("{e}"))?;
    let header = parser.header();
    if header.datalink != DataLink::ETHERNET {
        bail!(
            "link type {:?}: peek draws Ethernet captures only",
            header.datalink
        );
    }
    let nanos = header.ts_resolution == TsResolution::NanoSecond;
    while !rest.is_empty() {
        if loaded.frames.len() >= max_packets {
            loaded
                .notes
                .push(format!("stopped at --max-packets {max_packets}"));
            break;
        }
        let (next, raw) = match parser.next_raw_packet(rest) {
            Ok(r) => r,
            Err(PcapError::IncompleteBuffer) => {
                loaded
                    .notes
                    .push("the last record is cut short (ignored)".into());
                break;
            }
            Err(e) => bail!("record {}: {e}", loaded.frames.len() + 1),
        };
        let frac = if nanos {
            raw.ts_frac
        } else {
            raw.ts_frac.saturating_mul(1000)
        };
        loaded.frames.push(Frame {
            ts: Duration::new(u64::from(raw.ts_sec), frac.min(999_999_999)),
            wire_len: raw.orig_len.max(raw.incl_len) as usize,
            data: raw.data.into_owned(),
        });
        rest = next;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn writes_the_standard_header_and_reads_it_back() {
        let path = std::env::temp_dir().join(format!("peek-pcap-{}", std::process::id()));
        let frames = vec![Frame {
            ts: Duration::new(5, 250_000_000),
            wire_len: 100,
            data: vec![7; 60],
        }];
        write(&path, &frames, 262_144).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..4], &0xa1b2c3d4u32.to_ne_bytes());
        assert_eq!(&bytes[20..24], &1u32.to_ne_bytes(), "LINKTYPE_ETHERNET");
        assert_eq!(bytes.len(), 24 + 16 + 60);
        let back = read(&path, 1 << 20, 10).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(back.frames.len(), 1);
        assert_eq!(back.frames[0].ts, Duration::new(5, 250_000_000));
        assert_eq!(
            (back.frames[0].wire_len, back.frames[0].data.len()),
            (100, 60)
        );
    }

    proptest! {
        #[test]
        fn arbitrary_files_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..300)) {
            // A valid global header, then anything.
            let mut data = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
            data.extend_from_slice(&[0; 8]);
            data.extend_from_slice(&65535u32.to_le_bytes());
            data.extend_from_slice(&1u32.to_le_bytes());
            data.extend_from_slice(&tail);
            let _ = parse(&data, 100, &mut Loaded::default());
            let _ = parse(&tail, 100, &mut Loaded::default());
        }
    }
}
