#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Property tests of the SSE splitter (`sse::SseParser`): any byte split of
//! a stream yields the same events as the whole stream, and those are the
//! events that were written (any line ending, comments, `id:`/`retry:`
//! lines, multi-line data, a last event without its blank line).

mod prop_common;

use llm_gateway::sse::{SseEvent, SseParser};
use prop_common::split;
use proptest::prelude::*;

fn parse(chunks: &[&[u8]]) -> Vec<SseEvent> {
    let mut p = SseParser::new();
    let mut out = vec![];
    for c in chunks {
        p.feed(c, &mut out);
    }
    p.finish(&mut out);
    out
}

/// One event as written: optional `event:` name, data lines, and noise
/// (comments, id, retry, unknown fields) that must not change it.
#[derive(Debug, Clone)]
struct Written {
    event: Option<String>,
    data: Vec<String>,
    noise: Vec<(usize, String)>,
    space: bool,
}

/// Field values: any text without line breaks (`\r`, `\n`).
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[^\r\n]{0,30}",
        Just(String::new()),
        Just("[DONE]".to_string()),
        Just("{\"a\":1}".to_string()),
        Just(":colon first".to_string()),
        Just(" leading space".to_string()),
    ]
}

fn written() -> impl Strategy<Value = Written> {
    (
        prop::option::of("[a-z_]{1,12}"),
        prop::collection::vec(value(), 1..4),
        prop::collection::vec(
            (
                0usize..4,
                prop_oneof![
                    "[^\r\n]{0,12}".prop_map(|c| format!(":{c}")),
                    "[0-9]{1,4}".prop_map(|i| format!("id: {i}")),
                    "[0-9]{1,4}".prop_map(|r| format!("retry: {r}")),
                    Just("unknownfield: x".to_string()),
                    Just("nocolon".to_string()),
                ],
            ),
            0..3,
        ),
        any::<bool>(),
    )
        .prop_map(|(event, data, noise, space)| Written {
            event,
            data,
            noise,
            space,
        })
}

const ENDINGS: &[&str] = &["\n", "\r\n", "\r"];

/// The stream's bytes and the events a correct parser must yield.
fn render(events: &[Written], endings: &[usize], last_open: bool) -> (Vec<u8>, Vec<SseEvent>) {
    let mut out = String::new();
    let mut want = vec![];
    let mut e = 0usize;
    let mut prev = "";
    let mut nl = || {
        e += 1;
        let mut end = ENDINGS[endings[e % endings.len()] % ENDINGS.len()];
        // `\r` then `\n` would be one CRLF line end, not two.
        if prev == "\r" && end == "\n" {
            end = "\r";
        }
        prev = end;
        end
    };
    for (i, w) in events.iter().enumerate() {
        let sep = if w.space { ": " } else { ":" };
        let mut lines: Vec<String> = vec![];
        if let Some(name) = &w.event {
            lines.push(format!("event{sep}{name}"));
        }
        for d in &w.data {
            lines.push(format!("data{sep}{d}"));
        }
        for (at, n) in &w.noise {
            lines.insert((*at).min(lines.len()), n.clone());
        }
        for l in lines {
            out.push_str(&l);
            out.push_str(nl());
        }
        let last = i + 1 == events.len();
        if !(last && last_open) {
            out.push_str(nl());
        }
        let strip = |s: &str| -> String {
            // With "data:" (no space) a value's own leading space is
            // eaten as the separator's optional space.
            if w.space {
                s.to_string()
            } else {
                s.strip_prefix(' ').unwrap_or(s).to_string()
            }
        };
        let name = w.event.as_deref().map(&strip);
        want.push(SseEvent {
            event: name,
            data: w
                .data
                .iter()
                .map(|d| strip(d))
                .collect::<Vec<_>>()
                .join("\n"),
        });
    }
    (out.into_bytes(), want)
}

proptest! {
    #![proptest_config(prop_common::config(1000))]

    #[test]
    fn any_split_gives_the_written_events(
        events in prop::collection::vec(written(), 1..6),
        endings in prop::collection::vec(0usize..3, 1..8),
        last_open in any::<bool>(),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let (bytes, want) = render(&events, &endings, last_open);
        let whole = parse(&[&bytes]);
        prop_assert_eq!(&whole, &want, "whole: {:?}", String::from_utf8_lossy(&bytes));
        let parts = split(&bytes, &cuts);
        prop_assert_eq!(parse(&parts), want.clone(), "split {:?}", cuts);
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        prop_assert_eq!(parse(&bytewise), want);
    }

    /// Any bytes (invalid UTF-8, lone `\r`, NULs): every split gives what
    /// the whole gives, and nothing panics.
    #[test]
    fn any_bytes_any_split(
        bytes in prop::collection::vec(prop_oneof![
            4 => any::<u8>(),
            2 => prop::sample::select(&b"\r\n:data event"[..]),
        ], 0..300),
        cuts in prop::collection::vec(any::<usize>(), 0..10),
    ) {
        let whole = parse(&[&bytes]);
        prop_assert_eq!(parse(&split(&bytes, &cuts)), whole.clone());
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        prop_assert_eq!(parse(&bytewise), whole);
    }

    /// `at_event_boundary` holds after a chunk exactly when everything fed
    /// so far ended with an event's blank line.
    #[test]
    fn boundary_after_whole_events(
        events in prop::collection::vec(written(), 1..4),
        endings in prop::collection::vec(0usize..2, 1..4),
    ) {
        // (`\r` alone as the final line end would wait for a possible `\n`.)
        let (bytes, _) = render(&events, &endings, false);
        let mut p = SseParser::new();
        let mut out = vec![];
        p.feed(&bytes, &mut out);
        prop_assert!(p.at_event_boundary());
        p.feed(b"data: half", &mut out);
        prop_assert!(!p.at_event_boundary());
    }
}
