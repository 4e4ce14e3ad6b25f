use super::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};

/// Shared data as Envoy keeps it: a value and a version per key; a write
/// with a stale version fails.
#[derive(Default)]
pub struct MemStore {
    map: Mutex<HashMap<String, (Vec<u8>, u32)>>,
    next: Mutex<u32>,
    pub mismatches: AtomicUsize,
}

impl Store for MemStore {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.map.lock().unwrap().get(key).cloned()
    }
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        let mut m = self.map.lock().unwrap();
        if let (Some(c), Some((_, cur))) = (cas, m.get(key)) {
            if c != *cur {
                self.mismatches.fetch_add(1, Ordering::Relaxed);
                return Err(StoreError::CasMismatch);
            }
        }
        let mut n = self.next.lock().unwrap();
        *n += 1;
        m.insert(key.to_string(), (value.to_vec(), *n));
        Ok(())
    }
}

fn caller(id: &str, team: Option<&str>) -> Caller {
    Caller {
        id: id.into(),
        team: team.map(Into::into),
        principals: vec![],
        models: vec!["*".into()],
        labels: BTreeMap::new(),
        admin: false,
    }
}

fn quotas(json: &str, callers: &[Caller]) -> Quotas {
    let raw: RawQuotas = serde_json::from_str(json).unwrap();
    Quotas::validate(raw, callers, &|m: &str| {
        ["gpt-4o", "gpt-4o-mini"]
            .contains(&m)
            .then(|| m.to_string())
            .or_else(|| (m == "4o").then(|| "gpt-4o".to_string()))
    })
    .unwrap()
}

const T0: u64 = 1_764_000_000_000; // 2025-11-24T16:00:00Z

#[test]
fn windows_and_their_ends() {
    let w = Window::at(T0 + 42_500);
    assert_eq!(w.end_ms(Kind::RequestsPerMinute), Some(T0 + 60_000));
    assert_eq!(w.end_ms(Kind::TokensPerDay), Some(1_764_028_800_000)); // 2025-11-25T00:00Z
    assert_eq!(w.end_ms(Kind::UsdPerMonth), Some(1_764_547_200_000)); // 2025-12-01T00:00Z
    assert_eq!(w.end_ms(Kind::MaxConcurrent), None);
    // December rolls into January of the next year; February of a leap year.
    let dec = Window::at(1_765_000_000_000); // 2025-12-06
    assert_eq!(dec.end_ms(Kind::UsdPerMonth), Some(1_767_225_600_000)); // 2026-01-01
    let feb = Window::at(1_709_000_000_000); // 2024-02-27
    assert_eq!(feb.end_ms(Kind::UsdPerMonth), Some(1_709_251_200_000)); // 2024-03-01
    for d in [0u64, 59, 365, 10_000, 20_000, 30_000] {
        let (y, m) = civil_from_days(d);
        let first = days_from_civil(y, m);
        assert!(first <= d && d - first < 31, "{d}");
    }
}

#[test]
fn record_round_trip_and_bad_bytes() {
    let mut r = Record {
        window: Window::at(T0),
        ..Default::default()
    };
    r.total.admit(&Ask {
        tokens: 7,
        usd_micros: 3,
    });
    r.model_mut("gpt-4o").admit(&Ask {
        tokens: 7,
        usd_micros: 3,
    });
    assert_eq!(Record::decode(&r.encode()), Some(r.clone()));
    let b = r.encode();
    for i in 0..b.len() {
        assert_eq!(Record::decode(&b[..i]), None, "prefix {i}");
    }
    assert_eq!(Record::decode(b"hello"), None);
}

#[test]
fn windows_roll_independently() {
    let mut r = Record {
        window: Window::at(T0),
        ..Default::default()
    };
    let ask = Ask {
        tokens: 10,
        usd_micros: 5,
    };
    r.total.admit(&ask);
    r.model_mut("m").admit(&ask);
    r.roll(&Window::at(T0 + 60_000));
    assert_eq!((r.total.req_min, r.total.tok_min), (0, 0));
    assert_eq!(
        (r.total.req_day, r.total.tok_day, r.total.usd_day),
        (1, 10, 5)
    );
    assert_eq!(r.total.in_flight, 1, "in flight has no window");
    r.roll(&Window::at(T0 + 86_400_000 * 40));
    assert_eq!(r.total.usd_month, 0);
    assert_eq!(r.model("m").in_flight, 1, "kept while in flight");
}

#[test]
fn most_specific_level_applies() {
    let cs = [
        caller("a", Some("t")),
        caller("b", Some("t")),
        caller("c", None),
    ];
    let q = quotas(
        r#"{"default":{"requests_per_minute":100,"tokens_per_minute":1000,"models":{"gpt-4o":{"requests_per_minute":3}}},
            "teams":{"t":{"requests_per_minute":20,"usd_per_day":1.5}},
            "callers":{"a":{"requests_per_minute":5,"models":{"4o":{"requests_per_minute":2}}}}}"#,
        &cs,
    );
    let a = q.applied(&cs[0], "gpt-4o");
    let find = |v: &[Applied], k: Kind, per_model: bool| {
        v.iter()
            .find(|x| x.kind == k && x.model.is_some() == per_model)
            .cloned()
    };
    assert_eq!(find(&a, Kind::RequestsPerMinute, false).unwrap().limit, 5);
    assert_eq!(find(&a, Kind::RequestsPerMinute, true).unwrap().limit, 2);
    assert_eq!(find(&a, Kind::UsdPerDay, false).unwrap().limit, 1_500_000);
    assert!(find(&a, Kind::UsdPerDay, false).unwrap().on_team());
    let b = q.applied(&cs[1], "gpt-4o");
    assert_eq!(
        find(&b, Kind::RequestsPerMinute, false).unwrap().level,
        Level::Team
    );
    assert_eq!(find(&b, Kind::RequestsPerMinute, true).unwrap().limit, 3);
    let c = q.applied(&cs[2], "gpt-4o-mini");
    assert_eq!(find(&c, Kind::RequestsPerMinute, false).unwrap().limit, 100);
    assert_eq!(find(&c, Kind::RequestsPerMinute, true), None);
    assert_eq!(
        find(&c, Kind::TokensPerMinute, false).unwrap().level,
        Level::Default
    );
}

#[test]
fn config_errors_name_the_field() {
    let cs = [caller("a", Some("t"))];
    let bad = |j: &str| {
        let raw: RawQuotas = serde_json::from_str(j).unwrap();
        Quotas::validate(raw, &cs, &|m: &str| (m == "gpt-4o").then(|| m.to_string()))
            .unwrap_err()
            .field
    };
    assert_eq!(bad(r#"{"teams":{"x":{}}}"#), "quotas.teams.x");
    assert_eq!(bad(r#"{"callers":{"zz":{}}}"#), "quotas.callers.zz");
    assert_eq!(
        bad(r#"{"default":{"models":{"nope":{}}}}"#),
        "quotas.default.models.nope"
    );
    assert_eq!(
        bad(r#"{"default":{"usd_per_day":-1}}"#),
        "quotas.default.usd_per_day"
    );
    assert_eq!(
        bad(r#"{"default_reserve_tokens":0}"#),
        "quotas.default_reserve_tokens"
    );
    assert!(serde_json::from_str::<RawQuotas>(r#"{"default":{"rpm":1}}"#).is_err());
}

fn ask(tokens: u64) -> Ask {
    Ask {
        tokens,
        usd_micros: 0,
    }
}

#[test]
fn requests_per_minute_exact_and_reset() {
    let cs = [caller("a", None)];
    let q = quotas(r#"{"default":{"requests_per_minute":3}}"#, &cs);
    let s = MemStore::default();
    ensure(&s, &caller_key("a")).unwrap();
    let mut adms = vec![];
    for i in 0..3 {
        let a = admit(&s, &q, &cs[0], "gpt-4o", ask(1), T0 + 10_000 + i).unwrap();
        assert_eq!(a.requests.unwrap().remaining, 2 - i);
        assert_eq!(a.requests.unwrap().reset_ms, 50_000 - i);
        adms.push(a);
    }
    match admit(&s, &q, &cs[0], "gpt-4o", ask(1), T0 + 20_000) {
        Err(Denied::Limit {
            retry_after_ms,
            used,
            never,
            ..
        }) => {
            assert_eq!((retry_after_ms, used, never), (40_000, 3, false));
        }
        other => panic!("{other:?}"),
    }
    // Ending requests does not give back requests per minute.
    for a in &adms {
        assert!(settle(&s, a, ask(1), T0 + 30_000));
    }
    assert!(admit(&s, &q, &cs[0], "gpt-4o", ask(1), T0 + 59_999).is_err());
    // The next minute starts from zero.
    assert!(admit(&s, &q, &cs[0], "gpt-4o", ask(1), T0 + 60_000).is_ok());
}

#[test]
fn tokens_reserved_then_settled() {
    let cs = [caller("a", None)];
    let q = quotas(
        r#"{"default":{"tokens_per_minute":1000,"tokens_per_day":5000}}"#,
        &cs,
    );
    let s = MemStore::default();
    ensure(&s, &caller_key("a")).unwrap();
    let a = admit(&s, &q, &cs[0], "gpt-4o", ask(600), T0).unwrap();
    assert_eq!(a.tokens.unwrap().remaining, 400);
    // The reservation blocks a second large request ...
    assert!(admit(&s, &q, &cs[0], "gpt-4o", ask(600), T0 + 1).is_err());
    // ... until the first one settles with what it really used.
    settle(&s, &a, ask(50), T0 + 2);
    let b = admit(&s, &q, &cs[0], "gpt-4o", ask(600), T0 + 3).unwrap();
    assert_eq!(b.tokens.unwrap().remaining, 350);
    let r = read(&s, &caller_key("a"), T0 + 4);
    assert_eq!(
        (r.total.tok_min, r.total.tok_day, r.total.in_flight),
        (650, 650, 1)
    );
    // Settled after the minute rolled: counted in the new minute.
    settle(&s, &b, ask(100), T0 + 61_000);
    let r = read(&s, &caller_key("a"), T0 + 61_001);
    assert_eq!(
        (r.total.tok_min, r.total.tok_day, r.total.in_flight),
        (100, 150, 0)
    );
    // A request larger than the limit is refused for good.
    match admit(&s, &q, &cs[0], "gpt-4o", ask(1001), T0 + 62_000) {
        Err(Denied::Limit { never: true, .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn team_limit_is_shared_and_first_record_given_back() {
    let cs = [caller("a", Some("t")), caller("b", Some("t"))];
    let q = quotas(
        r#"{"default":{"requests_per_minute":10},"teams":{"t":{"max_concurrent":2}}}"#,
        &cs,
    );
    let s = MemStore::default();
    for k in [caller_key("a"), caller_key("b"), team_key("t")] {
        ensure(&s, &k).unwrap();
    }
    let x = admit(&s, &q, &cs[0], "gpt-4o", ask(1), T0).unwrap();
    let _y = admit(&s, &q, &cs[1], "gpt-4o", ask(1), T0).unwrap();
    let (e, h) = match admit(&s, &q, &cs[0], "gpt-4o", ask(1), T0) {
        Err(d) => refusal(&d, &cs[0]),
        Ok(_) => panic!("admitted a third"),
    };
    assert_eq!(e.status, 429);
    assert!(
        e.message.contains("max_concurrent of team 't'"),
        "{}",
        e.message
    );
    assert!(h.contains(&("retry-after".into(), "1".into())));
    // The caller's own record was given back: 2 requests counted, not 3.
    let r = read(&s, &caller_key("a"), T0);
    assert_eq!((r.total.req_min, r.total.in_flight), (1, 1));
    settle(&s, &x, ask(1), T0 + 5);
    assert!(admit(&s, &q, &cs[0], "gpt-4o", ask(1), T0 + 6).is_ok());
}

#[test]
fn per_model_limits_count_per_model() {
    let cs = [caller("a", None)];
    let q = quotas(
        r#"{"default":{"models":{"gpt-4o":{"requests_per_minute":1}}}}"#,
        &cs,
    );
    let s = MemStore::default();
    ensure(&s, &caller_key("a")).unwrap();
    assert!(admit(&s, &q, &cs[0], "gpt-4o", ask(1), T0).is_ok());
    let d = admit(&s, &q, &cs[0], "gpt-4o", ask(1), T0).unwrap_err();
    assert!(refusal(&d, &cs[0]).0.message.contains("on model gpt-4o"));
    for _ in 0..5 {
        assert!(admit(&s, &q, &cs[0], "gpt-4o-mini", ask(1), T0).is_ok());
    }
}

#[test]
fn budget_is_insufficient_quota_without_retry() {
    let cs = [caller("a", None)];
    let q = quotas(r#"{"default":{"usd_per_day":0.001}}"#, &cs);
    let s = MemStore::default();
    ensure(&s, &caller_key("a")).unwrap();
    let a = admit(
        &s,
        &q,
        &cs[0],
        "gpt-4o",
        Ask {
            tokens: 1,
            usd_micros: 600,
        },
        T0,
    )
    .unwrap();
    settle(
        &s,
        &a,
        Ask {
            tokens: 1,
            usd_micros: 900,
        },
        T0 + 1,
    );
    let d = admit(
        &s,
        &q,
        &cs[0],
        "gpt-4o",
        Ask {
            tokens: 1,
            usd_micros: 200,
        },
        T0 + 2,
    )
    .unwrap_err();
    let (e, h) = refusal(&d, &cs[0]);
    assert_eq!(e.code.as_deref(), Some("insufficient_quota"));
    assert!(e.message.contains("usd_per_day"));
    assert!(
        e.message.contains("limit $0.001000, used $0.000900"),
        "{}",
        e.message
    );
    assert!(h.contains(&("x-should-retry".into(), "false".into())));
}

#[test]
fn concurrent_admission_is_exact() {
    // 64 threads race for a limit of 10, many times: exactly 10 each time.
    let cs = [caller("a", Some("t"))];
    let q = Arc::new(quotas(
        r#"{"default":{"requests_per_minute":10},"teams":{"t":{"tokens_per_minute":1000000}}}"#,
        &cs,
    ));
    for trial in 0..20u64 {
        let s = Arc::new(MemStore::default());
        ensure(s.as_ref(), &caller_key("a")).unwrap();
        ensure(s.as_ref(), &team_key("t")).unwrap();
        let barrier = Arc::new(Barrier::new(64));
        let admitted = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..64)
            .map(|_| {
                let (s, q, b, n, c) = (
                    s.clone(),
                    q.clone(),
                    barrier.clone(),
                    admitted.clone(),
                    cs[0].clone(),
                );
                std::thread::spawn(move || {
                    b.wait();
                    if let Ok(a) = admit(s.as_ref(), &q, &c, "gpt-4o", ask(3), T0 + trial) {
                        n.fetch_add(1, Ordering::SeqCst);
                        settle(s.as_ref(), &a, ask(2), T0 + trial);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(admitted.load(Ordering::SeqCst), 10, "trial {trial}");
        let c = read(s.as_ref(), &caller_key("a"), T0 + trial);
        let t = read(s.as_ref(), &team_key("t"), T0 + trial);
        assert_eq!(
            (c.total.req_min, c.total.tok_min, c.total.in_flight),
            (10, 20, 0)
        );
        assert_eq!(
            (t.total.req_min, t.total.tok_min, t.total.in_flight),
            (10, 20, 0)
        );
    }
}

#[test]
fn concurrency_limit_under_threads_never_exceeded() {
    let cs = [caller("a", None)];
    let q = Arc::new(quotas(r#"{"default":{"max_concurrent":4}}"#, &cs));
    let s = Arc::new(MemStore::default());
    ensure(s.as_ref(), &caller_key("a")).unwrap();
    let inside = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..16)
        .map(|_| {
            let (s, q, inside, peak, c) = (
                s.clone(),
                q.clone(),
                inside.clone(),
                peak.clone(),
                cs[0].clone(),
            );
            std::thread::spawn(move || {
                for _ in 0..200 {
                    if let Ok(a) = admit(s.as_ref(), &q, &c, "gpt-4o", ask(1), T0) {
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                        settle(s.as_ref(), &a, ask(1), T0);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert!(peak.load(Ordering::SeqCst) <= 4);
    assert_eq!(read(s.as_ref(), &caller_key("a"), T0).total.in_flight, 0);
}

#[test]
fn reset_durations_in_openai_format() {
    assert_eq!(reset_duration(20), "20ms");
    assert_eq!(reset_duration(1000), "1s");
    assert_eq!(reset_duration(1500), "1.5s");
    assert_eq!(reset_duration(360_000), "6m0s");
    assert_eq!(reset_duration(59_999), "59.999s");
    assert_eq!(reset_duration(3_723_000), "1h2m3s");
}

#[test]
fn cost_in_micro_dollars_rounded_up() {
    let p = crate::config::Price {
        input_micros_per_mtok: 2_500_000,
        output_micros_per_mtok: 10_000_000,
        cached_input_micros_per_mtok: 1_250_000,
    };
    let u = crate::usage::Usage {
        prompt_tokens: 1000,
        completion_tokens: 100,
        cached_tokens: 400,
        ..Default::default()
    };
    // 600 × 2.5 + 400 × 1.25 + 100 × 10 = 1500 + 500 + 1000 micro-dollars.
    assert_eq!(cost_micros(&p, &u), 3000);
    let one = crate::usage::Usage {
        prompt_tokens: 1,
        ..Default::default()
    };
    assert_eq!(cost_micros(&p, &one), 3, "2.5 rounds up");
    let r = reservation(&p, 400, 50);
    assert_eq!(r.tokens, 150);
    assert_eq!(r.usd_micros, 750);
}
