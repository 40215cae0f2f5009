//! `--svg FILE`: the ladder as a picture, drawn with plotters' SVG backend
//! (lines, triangles, text; no chart, no fonts needed: the SVG names
//! `sans-serif` and the viewer picks one). Each conversation gets its two
//! columns and one sloped arrow per packet, labelled as in the text ladder.
//!
//! Try: `target/debug/peek --svg /tmp/e.svg -- target/debug/tcp-echo`, open the file in a browser

use std::path::Path;
use std::time::Duration;

use anyhow::{Result, anyhow};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::flow::{Conversation, Dir};
use crate::ladder::{label, millis};
use crate::parse::Packet;

const W: i32 = 960;
const LEFT: i32 = 230;
const RIGHT: i32 = 860;
const ROW: i32 = 26;
const HEAD: i32 = 56;

/// Draw every conversation, one under the other.
pub fn draw(path: &Path, convs: &[Conversation], packets: &[Packet], t0: Duration) -> Result<()> {
    let rows: usize = convs.iter().map(|c| c.packets.len()).sum();
    let h = 20 + convs.len() as i32 * (HEAD + 28) + rows as i32 * ROW;
    let root = SVGBackend::new(path, (W as u32, h.max(60) as u32)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let text = |s: &str, x: i32, y: i32, size: i32, color: &RGBColor| {
        Text::new(
            s.to_string(),
            (x, y),
            ("sans-serif", size).into_font().color(color),
        )
    };
    let grey = RGBColor(120, 120, 120);
    let mut y = 20;
    for c in convs {
        let kind = if c.tcp { "TCP" } else { "UDP" };
        root.draw(&text(
            &format!("{kind} {} -> {}", c.a, c.b),
            10,
            y,
            16,
            &BLACK,
        ))
        .map_err(|e| err(&e))?;
        root.draw(&text("#  ms", 10, y + 26, 12, &grey))
            .map_err(|e| err(&e))?;
        root.draw(&text(&c.a.to_string(), LEFT - 60, y + 26, 13, &BLACK))
            .map_err(|e| err(&e))?;
        root.draw(&text(&c.b.to_string(), RIGHT - 60, y + 26, 13, &BLACK))
            .map_err(|e| err(&e))?;
        let top = y + HEAD - 10;
        let bottom = y + HEAD + c.packets.len() as i32 * ROW + 8;
        for x in [LEFT, RIGHT] {
            root.draw(&PathElement::new(
                vec![(x, top), (x, bottom)],
                grey.stroke_width(2),
            ))
            .map_err(|e| err(&e))?;
        }
        for (k, &(i, dir)) in c.packets.iter().enumerate() {
            let Some(p) = packets.get(i) else { continue };
            // The label sits on top, the arrow slopes down under it.
            let y0 = y + HEAD + k as i32 * ROW + 11;
            let (x0, x1) = match dir {
                Dir::Out => (LEFT, RIGHT),
                Dir::Back => (RIGHT, LEFT),
            };
            let color = if label(p, None).contains("RST") {
                RGBColor(200, 40, 40)
            } else {
                RGBColor(0, 90, 160)
            };
            let y1 = y0 + ROW / 2;
            root.draw(&PathElement::new(
                vec![(x0, y0), (x1, y1)],
                color.stroke_width(1),
            ))
            .map_err(|e| err(&e))?;
            let back = if x1 > x0 { -9 } else { 9 };
            root.draw(&Polygon::new(
                vec![(x1, y1), (x1 + back, y1 - 5), (x1 + back, y1 + 3)],
                color.filled(),
            ))
            .map_err(|e| err(&e))?;
            let t = format!("#{} {:.3}", p.number, millis(p.ts, t0));
            root.draw(&text(&t, 10, y0 - 6, 11, &grey))
                .map_err(|e| err(&e))?;
            // Each label starts where its arrow starts, so it reads with it.
            let l = label(p, Some((c, dir)));
            let style = ("sans-serif", 11).into_font().color(&BLACK);
            let (style, x) = match dir {
                Dir::Out => (style, LEFT + 24),
                Dir::Back => (style.pos(Pos::new(HPos::Right, VPos::Top)), RIGHT - 24),
            };
            root.draw(&Text::new(l, (x, y0 - 15), style))
                .map_err(|e| err(&e))?;
        }
        y = bottom + 20;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
