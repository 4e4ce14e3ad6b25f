//! Per-caller quotas: requests and tokens per minute, tokens per day, spend
//! per day and per month (integer micro-dollars), requests in flight.
//! Plain Rust: the counters live behind [`Store`], which the glue backs with
//! Envoy's shared data (process-wide, compare-and-swap) and tests back with
//! an in-memory map used from real threads.
//!
//! Design
//! - One record per caller (`{KEY_PREFIX}c/<id>`) and per team
//!   (`{KEY_PREFIX}t/<team>`); each holds the current windows' counters in
//!   total and per model. Keys are fixed (created when the configuration is
//!   loaded, reused when windows roll), so shared data stays bounded:
//!   callers + teams keys, each a few dozen bytes plus ~80 bytes per model
//!   used in the current month.
//! - Windows are fixed and aligned to UTC: the minute, the day, the calendar
//!   month. A window's counters reset when it ends; the reset times in the
//!   headers are the ends of these windows.
//! - Which limit applies: for each kind of limit the most specific level that
//!   sets it (caller, then team, then default). A caller- or default-level
//!   limit is counted on the caller's record, a team-level limit on the
//!   team's record (shared by the team's callers). Per-model limits (`models`)
//!   are resolved the same way and counted per model, in addition.
//! - Admission is a compare-and-swap per record: read, roll the windows,
//!   check every limit on that record, add the request, write with the CAS
//!   id, retry on mismatch. A request touching two records (caller and team)
//!   takes them in that order and gives back the first when the second
//!   refuses, so a limit is never exceeded (it can refuse one request too
//!   many under contention on both records at once, never admit one more).
//! - Tokens are reserved at admission (`max_tokens` × `n`, or the model's
//!   `max_output_tokens`, or `default_reserve_tokens`, plus a prompt estimate
//!   of a token per 4 bytes of body) and settled with the real usage when the
//!   answer ends. Spend the same, from the model's prices.

use crate::config::{Caller, ConfigError};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};

/// Shared-data key prefix of the quota records.
pub const KEY_PREFIX: &str = "llm-gateway/quota/";
/// Compare-and-swap attempts before a request is refused as contended.
pub const CAS_ATTEMPTS: usize = 256;
/// Compare-and-swap attempts of an update that gives something back
/// (settlement, cancel) or only records (routing stats). Losing one would
/// hold an in-flight slot forever, and nothing is refused by waiting, so
/// these try much longer: every lost race means another worker's write
/// went through, so the loop ends as soon as the others pause.
pub const RELEASE_CAS_ATTEMPTS: usize = 1 << 16;
/// Reservation when neither the request nor the model bound the answer.
pub const DEFAULT_RESERVE_TOKENS: u64 = 1024;

// ---------------------------------------------------------------- config

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModelLimits {
    #[serde(default)]
    requests_per_minute: Option<u64>,
    #[serde(default)]
    tokens_per_minute: Option<u64>,
    #[serde(default)]
    tokens_per_day: Option<u64>,
    #[serde(default)]
    usd_per_day: Option<f64>,
    #[serde(default)]
    usd_per_month: Option<f64>,
    #[serde(default)]
    max_concurrent: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    #[serde(default)]
    requests_per_minute: Option<u64>,
    #[serde(default)]
    tokens_per_minute: Option<u64>,
    #[serde(default)]
    tokens_per_day: Option<u64>,
    #[serde(default)]
    usd_per_day: Option<f64>,
    #[serde(default)]
    usd_per_month: Option<f64>,
    #[serde(default)]
    max_concurrent: Option<u64>,
    #[serde(default)]
    models: BTreeMap<String, RawModelLimits>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGlobal {
    #[serde(default)]
    descriptor_headers: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuotas {
    #[serde(default)]
    default: Option<RawLimits>,
    #[serde(default)]
    teams: BTreeMap<String, RawLimits>,
    #[serde(default)]
    callers: BTreeMap<String, RawLimits>,
    #[serde(default)]
    default_reserve_tokens: Option<u64>,
    #[serde(default)]
    global: Option<RawGlobal>,
}

/// The kinds of limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    RequestsPerMinute,
    TokensPerMinute,
    TokensPerDay,
    UsdPerDay,
    UsdPerMonth,
    MaxConcurrent,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::RequestsPerMinute,
        Kind::TokensPerMinute,
        Kind::TokensPerDay,
        Kind::UsdPerDay,
        Kind::UsdPerMonth,
        Kind::MaxConcurrent,
    ];

    /// The config field name (also used in errors, metrics and `/v1/usage`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::RequestsPerMinute => "requests_per_minute",
            Kind::TokensPerMinute => "tokens_per_minute",
            Kind::TokensPerDay => "tokens_per_day",
            Kind::UsdPerDay => "usd_per_day",
            Kind::UsdPerMonth => "usd_per_month",
            Kind::MaxConcurrent => "max_concurrent",
        }
    }

    /// A spend limit (its refusal is `insufficient_quota`, not worth a retry
    /// within the minute).
    pub fn is_budget(self) -> bool {
        matches!(self, Kind::UsdPerDay | Kind::UsdPerMonth)
    }
}

/// Limits of one level (spend in micro-dollars).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub tokens_per_day: Option<u64>,
    pub usd_micros_per_day: Option<u64>,
    pub usd_micros_per_month: Option<u64>,
    pub max_concurrent: Option<u64>,
}

impl Limits {
    pub fn get(&self, k: Kind) -> Option<u64> {
        match k {
            Kind::RequestsPerMinute => self.requests_per_minute,
            Kind::TokensPerMinute => self.tokens_per_minute,
            Kind::TokensPerDay => self.tokens_per_day,
            Kind::UsdPerDay => self.usd_micros_per_day,
            Kind::UsdPerMonth => self.usd_micros_per_month,
            Kind::MaxConcurrent => self.max_concurrent,
        }
    }

    pub fn is_empty(&self) -> bool {
        Kind::ALL.iter().all(|&k| self.get(k).is_none())
    }
}

/// The limits of a level: overall, and per model (by configured name).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LimitSet {
    pub all: Limits,
    pub models: HashMap<String, Limits>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Quotas {
    pub default: LimitSet,
    pub teams: HashMap<String, LimitSet>,
    pub callers: HashMap<String, LimitSet>,
    pub default_reserve_tokens: u64,
    /// Publish caller, team and model as request headers and the tokens as
    /// filter state, for Envoy's rate limit filter (global mode).
    pub descriptor_headers: bool,
}

fn usd_micros(field: &str, usd: Option<f64>) -> Result<Option<u64>, ConfigError> {
    match usd {
        None => Ok(None),
        Some(v) if v.is_finite() && (0.0..=1e9).contains(&v) => {
            Ok(Some((v * 1_000_000.0).round() as u64))
        }
        Some(_) => Err(ConfigError::new(
            field,
            "must be an amount in USD, 0 to 1000000000",
        )),
    }
}

fn limits(path: &str, r: &RawModelLimits) -> Result<Limits, ConfigError> {
    Ok(Limits {
        requests_per_minute: r.requests_per_minute,
        tokens_per_minute: r.tokens_per_minute,
        tokens_per_day: r.tokens_per_day,
        usd_micros_per_day: usd_micros(&format!("{path}.usd_per_day"), r.usd_per_day)?,
        usd_micros_per_month: usd_micros(&format!("{path}.usd_per_month"), r.usd_per_month)?,
        max_concurrent: r.max_concurrent,
    })
}

fn limit_set(
    path: &str,
    r: RawLimits,
    canonical_model: &dyn Fn(&str) -> Option<String>,
) -> Result<LimitSet, ConfigError> {
    let all = limits(
        path,
        &RawModelLimits {
            requests_per_minute: r.requests_per_minute,
            tokens_per_minute: r.tokens_per_minute,
            tokens_per_day: r.tokens_per_day,
            usd_per_day: r.usd_per_day,
            usd_per_month: r.usd_per_month,
            max_concurrent: r.max_concurrent,
        },
    )?;
    let mut models = HashMap::new();
    for (name, m) in &r.models {
        let p = format!("{path}.models.{name}");
        let Some(canon) = canonical_model(name) else {
            return Err(ConfigError::new(
                p,
                format!("'{name}' is not a model name or alias"),
            ));
        };
        if models.insert(canon.clone(), limits(&p, m)?).is_some() {
            return Err(ConfigError::new(
                p,
                format!("limits for model '{canon}' are given twice (name and alias)"),
            ));
        }
    }
    Ok(LimitSet { all, models })
}

impl Quotas {
    /// Validate the `quotas` object against the callers and models.
    pub fn validate(
        raw: RawQuotas,
        callers: &[Caller],
        canonical_model: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Quotas, ConfigError> {
        let default = match raw.default {
            Some(d) => limit_set("quotas.default", d, canonical_model)?,
            None => LimitSet::default(),
        };
        let mut teams = HashMap::new();
        for (name, l) in raw.teams {
            let path = format!("quotas.teams.{name}");
            if !callers
                .iter()
                .any(|c| c.team.as_deref() == Some(name.as_str()))
            {
                return Err(ConfigError::new(
                    path,
                    format!("no caller has team '{name}'"),
                ));
            }
            let set = limit_set(&path, l, canonical_model)?;
            teams.insert(name, set);
        }
        let mut by_caller = HashMap::new();
        for (id, l) in raw.callers {
            let path = format!("quotas.callers.{id}");
            if !callers.iter().any(|c| c.id == id) {
                return Err(ConfigError::new(path, format!("no caller has id '{id}'")));
            }
            let set = limit_set(&path, l, canonical_model)?;
            by_caller.insert(id, set);
        }
        let reserve = raw.default_reserve_tokens.unwrap_or(DEFAULT_RESERVE_TOKENS);
        if reserve == 0 {
            return Err(ConfigError::new(
                "quotas.default_reserve_tokens",
                "must be at least 1",
            ));
        }
        Ok(Quotas {
            default,
            teams,
            callers: by_caller,
            default_reserve_tokens: reserve,
            descriptor_headers: raw.global.map(|g| g.descriptor_headers).unwrap_or(false),
        })
    }
}

/// Where a limit was set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Caller,
    Team,
    Default,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Caller => "caller",
            Level::Team => "team",
            Level::Default => "default",
        }
    }
}

/// One limit that applies to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub kind: Kind,
    pub limit: u64,
    pub level: Level,
    /// `Some(model)` for a per-model limit.
    pub model: Option<String>,
}

impl Applied {
    /// Counted on the team's record (else on the caller's).
    pub fn on_team(&self) -> bool {
        self.level == Level::Team
    }
}

impl Quotas {
    /// The limits that apply to `caller` using `model` (configured name).
    pub fn applied(&self, caller: &Caller, model: &str) -> Vec<Applied> {
        let levels: [(Level, Option<&LimitSet>); 3] = [
            (Level::Caller, self.callers.get(&caller.id)),
            (
                Level::Team,
                caller.team.as_ref().and_then(|t| self.teams.get(t)),
            ),
            (Level::Default, Some(&self.default)),
        ];
        let mut out = Vec::new();
        for k in Kind::ALL {
            if let Some((level, limit)) = levels
                .iter()
                .find_map(|(lv, s)| s.and_then(|s| s.all.get(k)).map(|v| (*lv, v)))
            {
                out.push(Applied {
                    kind: k,
                    limit,
                    level,
                    model: None,
                });
            }
            if let Some((level, limit)) = levels.iter().find_map(|(lv, s)| {
                s.and_then(|s| s.models.get(model))
                    .and_then(|m| m.get(k))
                    .map(|v| (*lv, v))
            }) {
                out.push(Applied {
                    kind: k,
                    limit,
                    level,
                    model: Some(model.to_string()),
                });
            }
        }
        out
    }
}

/// The record keys.
pub fn caller_key(id: &str) -> String {
    format!("{KEY_PREFIX}c/{id}")
}

pub fn team_key(team: &str) -> String {
    format!("{KEY_PREFIX}t/{team}")
}

// ---------------------------------------------------------------- windows

/// The current windows: minute and day since the Unix epoch, months since
/// year 0 (year × 12 + month − 1), all UTC.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    pub minute: u64,
    pub day: u64,
    pub month: u64,
}

/// Civil date (year, month 1–12) of a day since the Unix epoch
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y.max(0) as u64, m as u64)
}

/// Days since the Unix epoch of the first day of `year`-`month`.
fn days_from_civil(year: u64, month: u64) -> u64 {
    let y = year as i64 - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe - 719_468).max(0) as u64
}

impl Window {
    pub fn at(now_ms: u64) -> Window {
        let day = now_ms / 86_400_000;
        let (y, m) = civil_from_days(day);
        Window {
            minute: now_ms / 60_000,
            day,
            month: y * 12 + (m - 1),
        }
    }

    /// End (Unix ms) of the window a limit kind counts in; `None` for the
    /// windowless concurrency limit.
    pub fn end_ms(&self, k: Kind) -> Option<u64> {
        match k {
            Kind::RequestsPerMinute | Kind::TokensPerMinute => Some((self.minute + 1) * 60_000),
            Kind::TokensPerDay | Kind::UsdPerDay => Some((self.day + 1) * 86_400_000),
            Kind::UsdPerMonth => {
                let next = self.month + 1;
                Some(days_from_civil(next / 12, next % 12 + 1) * 86_400_000)
            }
            Kind::MaxConcurrent => None,
        }
    }
}

// ---------------------------------------------------------------- record

/// The counters of one record (in total, or for one model).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub req_min: u64,
    pub tok_min: u64,
    pub req_day: u64,
    pub tok_day: u64,
    pub usd_day: u64,
    pub req_month: u64,
    pub tok_month: u64,
    pub usd_month: u64,
    pub in_flight: u64,
}

const COUNTS_LEN: usize = 9;

impl Counts {
    fn fields(&self) -> [u64; COUNTS_LEN] {
        [
            self.req_min,
            self.tok_min,
            self.req_day,
            self.tok_day,
            self.usd_day,
            self.req_month,
            self.tok_month,
            self.usd_month,
            self.in_flight,
        ]
    }

    fn from_fields(f: [u64; COUNTS_LEN]) -> Counts {
        Counts {
            req_min: f[0],
            tok_min: f[1],
            req_day: f[2],
            tok_day: f[3],
            usd_day: f[4],
            req_month: f[5],
            tok_month: f[6],
            usd_month: f[7],
            in_flight: f[8],
        }
    }

    fn is_zero(&self) -> bool {
        self.fields().iter().all(|&v| v == 0)
    }

    /// What a limit kind compares against.
    pub fn used(&self, k: Kind) -> u64 {
        match k {
            Kind::RequestsPerMinute => self.req_min,
            Kind::TokensPerMinute => self.tok_min,
            Kind::TokensPerDay => self.tok_day,
            Kind::UsdPerDay => self.usd_day,
            Kind::UsdPerMonth => self.usd_month,
            Kind::MaxConcurrent => self.in_flight,
        }
    }

    fn roll(&mut self, minute: bool, day: bool, month: bool) {
        if minute {
            self.req_min = 0;
            self.tok_min = 0;
        }
        if day {
            self.req_day = 0;
            self.tok_day = 0;
            self.usd_day = 0;
        }
        if month {
            self.req_month = 0;
            self.tok_month = 0;
            self.usd_month = 0;
        }
    }

    fn admit(&mut self, ask: &Ask) {
        self.req_min += 1;
        self.req_day += 1;
        self.req_month += 1;
        self.tok_min = self.tok_min.saturating_add(ask.tokens);
        self.tok_day = self.tok_day.saturating_add(ask.tokens);
        self.tok_month = self.tok_month.saturating_add(ask.tokens);
        self.usd_day = self.usd_day.saturating_add(ask.usd_micros);
        self.usd_month = self.usd_month.saturating_add(ask.usd_micros);
        self.in_flight += 1;
    }

    /// Undo an admission made in window `at` (the record is rolled to `now`).
    fn unadmit(&mut self, ask: &Ask, at: &Window, now: &Window) {
        if at.minute == now.minute {
            self.req_min = self.req_min.saturating_sub(1);
            self.tok_min = self.tok_min.saturating_sub(ask.tokens);
        }
        if at.day == now.day {
            self.req_day = self.req_day.saturating_sub(1);
            self.tok_day = self.tok_day.saturating_sub(ask.tokens);
            self.usd_day = self.usd_day.saturating_sub(ask.usd_micros);
        }
        if at.month == now.month {
            self.req_month = self.req_month.saturating_sub(1);
            self.tok_month = self.tok_month.saturating_sub(ask.tokens);
            self.usd_month = self.usd_month.saturating_sub(ask.usd_micros);
        }
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Replace the reservation made in window `at` by what was used: in a
    /// window that is still current the difference is applied; in a window
    /// that has rolled since, what was used counts in the new one.
    fn settle(&mut self, reserved: &Ask, used: &Ask, at: &Window, now: &Window) {
        fn fix(v: &mut u64, reserved: u64, used: u64, same: bool) {
            *v = if same {
                v.saturating_sub(reserved).saturating_add(used)
            } else {
                v.saturating_add(used)
            };
        }
        fix(
            &mut self.tok_min,
            reserved.tokens,
            used.tokens,
            at.minute == now.minute,
        );
        fix(
            &mut self.tok_day,
            reserved.tokens,
            used.tokens,
            at.day == now.day,
        );
        fix(
            &mut self.usd_day,
            reserved.usd_micros,
            used.usd_micros,
            at.day == now.day,
        );
        fix(
            &mut self.tok_month,
            reserved.tokens,
            used.tokens,
            at.month == now.month,
        );
        fix(
            &mut self.usd_month,
            reserved.usd_micros,
            used.usd_micros,
            at.month == now.month,
        );
        self.in_flight = self.in_flight.saturating_sub(1);
    }
}

/// One record: the windows it counts in, its totals and its per-model counts.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Record {
    pub window: Window,
    pub total: Counts,
    pub models: Vec<(String, Counts)>,
}

const MAGIC: &[u8; 2] = b"Q1";

fn read_u64(b: &[u8], at: &mut usize) -> Option<u64> {
    let s = b.get(*at..*at + 8)?;
    *at += 8;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_le_bytes(a))
}

fn read_counts(b: &[u8], at: &mut usize) -> Option<Counts> {
    let mut f = [0u64; COUNTS_LEN];
    for v in f.iter_mut() {
        *v = read_u64(b, at)?;
    }
    Some(Counts::from_fields(f))
}

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + 24 + 72 + 2 + self.models.len() * 90);
        out.extend_from_slice(MAGIC);
        for v in [self.window.minute, self.window.day, self.window.month] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in self.total.fields() {
            out.extend_from_slice(&v.to_le_bytes());
        }
        let n = self.models.len().min(u16::MAX as usize);
        out.extend_from_slice(&(n as u16).to_le_bytes());
        for (name, c) in self.models.iter().take(n) {
            let name = name.as_bytes();
            let len = name.len().min(u16::MAX as usize);
            out.extend_from_slice(&(len as u16).to_le_bytes());
            out.extend_from_slice(&name[..len]);
            for v in c.fields() {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out
    }

    /// Decode a stored record; `None` for bytes that are not one.
    pub fn decode(b: &[u8]) -> Option<Record> {
        if b.get(..2)? != MAGIC {
            return None;
        }
        let mut at = 2;
        let window = Window {
            minute: read_u64(b, &mut at)?,
            day: read_u64(b, &mut at)?,
            month: read_u64(b, &mut at)?,
        };
        let total = read_counts(b, &mut at)?;
        let n = u16::from_le_bytes([*b.get(at)?, *b.get(at + 1)?]) as usize;
        at += 2;
        let mut models = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            let len = u16::from_le_bytes([*b.get(at)?, *b.get(at + 1)?]) as usize;
            at += 2;
            let name = String::from_utf8(b.get(at..at + len)?.to_vec()).ok()?;
            at += len;
            models.push((name, read_counts(b, &mut at)?));
        }
        (at == b.len()).then_some(Record {
            window,
            total,
            models,
        })
    }

    /// Zero the counters of windows that ended before `now`, and drop
    /// per-model entries left all zero.
    pub fn roll(&mut self, now: &Window) {
        let minute = self.window.minute != now.minute;
        let day = self.window.day != now.day;
        let month = self.window.month != now.month;
        if !(minute || day || month) {
            return;
        }
        self.total.roll(minute, day, month);
        for (_, c) in self.models.iter_mut() {
            c.roll(minute, day, month);
        }
        self.models.retain(|(_, c)| !c.is_zero());
        self.window = *now;
    }

    pub fn model(&self, name: &str) -> Counts {
        self.models
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| *c)
            .unwrap_or_default()
    }

    fn model_mut(&mut self, name: &str) -> &mut Counts {
        let pos = match self.models.iter().position(|(n, _)| n == name) {
            Some(p) => p,
            None => {
                self.models.push((name.to_string(), Counts::default()));
                self.models.len() - 1
            }
        };
        &mut self.models[pos].1
    }
}

// ---------------------------------------------------------------- store

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// Someone wrote the key since it was read.
    CasMismatch,
    /// The store refused the write.
    Failed,
}

/// Process-wide key-value store with compare-and-swap, as proxy-wasm's
/// shared data: `get` gives the value and its version, `set` with
/// `Some(version)` writes only if the key still has that version
/// (`None` writes unconditionally).
pub trait Store {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)>;
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError>;

    /// Write `initial` at `key` unless the key exists (records are created
    /// when the configuration loads, so requests only write with CAS).
    fn create(&self, key: &str, initial: &[u8]) -> Result<(), StoreError> {
        if self.get(key).is_some() {
            return Ok(());
        }
        self.set(key, initial, None)
    }
}

/// Create the record at `key` if it does not exist. Called for every caller
/// and team when the configuration loads; the request path only writes with
/// a compare-and-swap id.
pub fn ensure(store: &dyn Store, key: &str) -> Result<(), StoreError> {
    store.create(key, &Record::default().encode())
}

/// Read-modify-write of one record with compare-and-swap. `f` sees the
/// record rolled to `now` and returns `Err` to write nothing.
fn update<T, E>(
    store: &dyn Store,
    key: &str,
    now: &Window,
    mut f: impl FnMut(&mut Record) -> Result<T, E>,
    busy: impl Fn() -> E,
    attempts: usize,
) -> Result<T, E> {
    for _ in 0..attempts {
        let (mut rec, cas) = match store.get(key) {
            Some((bytes, cas)) => (Record::decode(&bytes).unwrap_or_default(), Some(cas)),
            None => {
                // Not created at configuration time (should not happen).
                if ensure(store, key).is_err() {
                    return Err(busy());
                }
                continue;
            }
        };
        rec.roll(now);
        let out = f(&mut rec)?;
        match store.set(key, &rec.encode(), cas) {
            Ok(()) => return Ok(out),
            Err(StoreError::CasMismatch) => continue,
            Err(StoreError::Failed) => return Err(busy()),
        }
    }
    Err(busy())
}

// ---------------------------------------------------------------- admission

/// What a request asks for, or what it used.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    pub tokens: u64,
    pub usd_micros: u64,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    Limit {
        applied: Applied,
        used: u64,
        requested: u64,
        /// Milliseconds until the limit's window ends (the concurrency
        /// limit: a short fixed wait).
        retry_after_ms: u64,
        /// The request alone exceeds the limit: waiting does not help.
        never: bool,
    },
    /// The counters could not be updated (contention beyond
    /// [`CAS_ATTEMPTS`], or the store refused).
    Busy,
}

/// Wait suggested after a refusal by the concurrency limit.
pub const CONCURRENCY_RETRY_MS: u64 = 1000;

/// What the rate-limit headers report for one kind (requests or tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headroom {
    pub limit: u64,
    pub remaining: u64,
    pub reset_ms: u64,
}

/// An admitted request: what to settle when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    pub keys: Vec<String>,
    pub model: String,
    pub at: Window,
    pub reserved: Ask,
    pub requests: Option<Headroom>,
    pub tokens: Option<Headroom>,
    /// The limits that applied, for the audit record.
    pub applied: Vec<Applied>,
}

fn keep_tightest(slot: &mut Option<Headroom>, h: Headroom) {
    match slot {
        Some(s) if s.remaining <= h.remaining => {}
        _ => *slot = Some(h),
    }
}

/// Check and count a request of `caller` for `model` (configured name)
/// asking `ask`, at `now_ms` (Unix ms).
pub fn admit(
    store: &dyn Store,
    q: &Quotas,
    caller: &Caller,
    model: &str,
    ask: Ask,
    now_ms: u64,
) -> Result<Admission, Denied> {
    let now = Window::at(now_ms);
    let applied = q.applied(caller, model);
    let mut keys = vec![caller_key(&caller.id)];
    if let Some(t) = &caller.team {
        keys.push(team_key(t));
    }
    let mut adm = Admission {
        keys: Vec::new(),
        model: model.to_string(),
        at: now,
        reserved: ask,
        requests: None,
        tokens: None,
        applied: applied.clone(),
    };
    for (i, key) in keys.iter().enumerate() {
        let on_team = i == 1;
        let here: Vec<&Applied> = applied.iter().filter(|a| a.on_team() == on_team).collect();
        let result = update(
            store,
            key,
            &now,
            |rec| {
                let mut heads: (Option<Headroom>, Option<Headroom>) = (None, None);
                for a in &here {
                    let counts = match &a.model {
                        None => rec.total,
                        Some(m) => rec.model(m),
                    };
                    let used = counts.used(a.kind);
                    let requested = match a.kind {
                        Kind::RequestsPerMinute | Kind::MaxConcurrent => 1,
                        Kind::TokensPerMinute | Kind::TokensPerDay => ask.tokens,
                        Kind::UsdPerDay | Kind::UsdPerMonth => ask.usd_micros,
                    };
                    let end = now.end_ms(a.kind);
                    if used.saturating_add(requested) > a.limit {
                        return Err(Denied::Limit {
                            applied: (*a).clone(),
                            used,
                            requested,
                            retry_after_ms: end
                                .map(|e| e.saturating_sub(now_ms).max(1))
                                .unwrap_or(CONCURRENCY_RETRY_MS),
                            never: requested > a.limit,
                        });
                    }
                    let remaining = a.limit - used - requested;
                    let reset_ms = end.map(|e| e.saturating_sub(now_ms)).unwrap_or(0);
                    let h = Headroom {
                        limit: a.limit,
                        remaining,
                        reset_ms,
                    };
                    match a.kind {
                        Kind::RequestsPerMinute => keep_tightest(&mut heads.0, h),
                        Kind::TokensPerMinute => keep_tightest(&mut heads.1, h),
                        _ => {}
                    }
                }
                rec.total.admit(&ask);
                rec.model_mut(model).admit(&ask);
                Ok(heads)
            },
            || Denied::Busy,
            CAS_ATTEMPTS,
        );
        match result {
            Ok((r, t)) => {
                adm.keys.push(key.clone());
                if let Some(h) = r {
                    keep_tightest(&mut adm.requests, h);
                }
                if let Some(h) = t {
                    keep_tightest(&mut adm.tokens, h);
                }
            }
            Err(d) => {
                // Give back what the earlier records counted.
                cancel(store, &adm, now_ms);
                return Err(d);
            }
        }
    }
    Ok(adm)
}

/// Undo an admission entirely: the request is not counted at all (it never
/// went out, or the global rate limit service refused it after the local
/// admission).
pub fn cancel(store: &dyn Store, adm: &Admission, now_ms: u64) {
    let now = Window::at(now_ms);
    for key in &adm.keys {
        let _ = update(
            store,
            key,
            &now,
            |rec| {
                rec.total.unadmit(&adm.reserved, &adm.at, &now);
                rec.model_mut(&adm.model)
                    .unadmit(&adm.reserved, &adm.at, &now);
                Ok::<(), ()>(())
            },
            || (),
            RELEASE_CAS_ATTEMPTS,
        );
    }
}

/// The request ended: replace its reservation by what it `used` and take it
/// out of the in-flight count. Returns false if a record could not be
/// written (contention beyond [`RELEASE_CAS_ATTEMPTS`]).
pub fn settle(store: &dyn Store, adm: &Admission, used: Ask, now_ms: u64) -> bool {
    let now = Window::at(now_ms);
    let mut ok = true;
    for key in &adm.keys {
        ok &= update(
            store,
            key,
            &now,
            |rec| {
                rec.total.settle(&adm.reserved, &used, &adm.at, &now);
                rec.model_mut(&adm.model)
                    .settle(&adm.reserved, &used, &adm.at, &now);
                Ok::<(), ()>(())
            },
            || (),
            RELEASE_CAS_ATTEMPTS,
        )
        .is_ok();
    }
    ok
}

/// Cost in micro-dollars of a usage at the model's prices (micro-dollars
/// per million tokens), rounded up.
pub fn cost_micros(price: &crate::config::Price, usage: &crate::usage::Usage) -> u64 {
    let cached = usage.cached_tokens.min(usage.prompt_tokens);
    let fresh = usage.prompt_tokens - cached;
    let pico = u128::from(fresh) * u128::from(price.input_micros_per_mtok)
        + u128::from(cached) * u128::from(price.cached_input_micros_per_mtok)
        + u128::from(usage.completion_tokens) * u128::from(price.output_micros_per_mtok);
    u64::try_from(pico.div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// What a request reserves: `completion` tokens for the answer (from the
/// request or the model) plus a prompt estimate of one token per 4 bytes.
pub fn reservation(price: &crate::config::Price, body_len: usize, completion: u64) -> Ask {
    let prompt = (body_len as u64).div_ceil(4).max(1);
    let usage = crate::usage::Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion,
        ..Default::default()
    };
    Ask {
        tokens: prompt.saturating_add(completion),
        usd_micros: cost_micros(price, &usage),
    }
}

/// Read a record as it stands at `now_ms` (for `/v1/usage`).
pub fn read(store: &dyn Store, key: &str, now_ms: u64) -> Record {
    let mut rec = store
        .get(key)
        .and_then(|(b, _)| Record::decode(&b))
        .unwrap_or_default();
    rec.roll(&Window::at(now_ms));
    rec
}

/// A duration in the format of OpenAI's `x-ratelimit-reset-*` headers
/// (Go's: `20ms`, `1s`, `1.5s`, `6m0s`, `1h2m3s`).
pub fn reset_duration(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let h = ms / 3_600_000;
    let m = (ms / 60_000) % 60;
    let s = (ms / 1000) % 60;
    let frac = ms % 1000;
    let secs = if frac == 0 {
        format!("{s}s")
    } else {
        let f = format!("{frac:03}");
        format!("{s}.{}s", f.trim_end_matches('0'))
    };
    if h > 0 {
        format!("{h}h{m}m{secs}")
    } else if m > 0 {
        format!("{m}m{secs}")
    } else {
        secs
    }
}

/// The `x-ratelimit-*` headers of an admitted request.
pub fn headers(adm: &Admission) -> Vec<(String, String)> {
    let mut h = Vec::new();
    for (what, head) in [("requests", adm.requests), ("tokens", adm.tokens)] {
        if let Some(x) = head {
            h.push((format!("x-ratelimit-limit-{what}"), x.limit.to_string()));
            h.push((
                format!("x-ratelimit-remaining-{what}"),
                x.remaining.to_string(),
            ));
            h.push((
                format!("x-ratelimit-reset-{what}"),
                reset_duration(x.reset_ms),
            ));
        }
    }
    h
}

/// The 429 for a refusal, with its headers: `retry-after` (seconds, rounded
/// up) and `retry-after-ms`, the `x-ratelimit-*` headers of the limit that
/// refused, and `x-should-retry: false` when waiting a minute cannot help
/// (a budget, or a request larger than the limit), which the official SDKs
/// honour.
pub fn refusal(d: &Denied, caller: &Caller) -> (crate::error::ApiError, Vec<(String, String)>) {
    use crate::error::ApiError;
    match d {
        Denied::Busy => (
            ApiError::server(
                503,
                "quota_store_busy",
                "The gateway could not update its quota counters; retry shortly.",
            ),
            vec![
                ("retry-after".into(), "1".into()),
                ("retry-after-ms".into(), "1000".into()),
            ],
        ),
        Denied::Limit {
            applied,
            used,
            requested,
            retry_after_ms,
            never,
        } => {
            let whose = match applied.level {
                Level::Team => format!("team '{}'", caller.team.as_deref().unwrap_or_default()),
                Level::Caller | Level::Default => format!("caller '{}'", caller.id),
            };
            let on_model = applied
                .model
                .as_ref()
                .map(|m| format!(" on model {m}"))
                .unwrap_or_default();
            let (fmt_used, fmt_limit, fmt_req) = if applied.kind.is_budget() {
                let usd = |v: u64| format!("${}.{:06}", v / 1_000_000, v % 1_000_000);
                (usd(*used), usd(applied.limit), usd(*requested))
            } else {
                (
                    used.to_string(),
                    applied.limit.to_string(),
                    requested.to_string(),
                )
            };
            let secs = retry_after_ms.div_ceil(1000).max(1);
            let wait = if *never {
                " This request alone exceeds the limit: lower max_tokens or the prompt size."
                    .to_string()
            } else if applied.kind == Kind::MaxConcurrent {
                format!(" Please try again in {secs}s, when a request in flight has ended.")
            } else {
                format!(" Please try again in {}.", reset_duration(*retry_after_ms))
            };
            let message = format!(
                "{} reached for {} of {whose}{on_model}: limit {fmt_limit}, used {fmt_used}, requested {fmt_req}.{wait}",
                if applied.kind.is_budget() { "Budget" } else { "Rate limit" },
                applied.kind.name()
            );
            let code = if applied.kind.is_budget() {
                "insufficient_quota"
            } else {
                "rate_limit_exceeded"
            };
            let e = ApiError::new(429, code, message).code(code);
            let mut h = vec![
                ("retry-after".to_string(), secs.to_string()),
                ("retry-after-ms".to_string(), retry_after_ms.to_string()),
                ("x-llm-limit".to_string(), applied.kind.name().to_string()),
            ];
            let what = match applied.kind {
                Kind::RequestsPerMinute => Some("requests"),
                Kind::TokensPerMinute => Some("tokens"),
                _ => None,
            };
            if let Some(w) = what {
                h.push((format!("x-ratelimit-limit-{w}"), applied.limit.to_string()));
                h.push((
                    format!("x-ratelimit-remaining-{w}"),
                    applied.limit.saturating_sub(*used).to_string(),
                ));
                h.push((
                    format!("x-ratelimit-reset-{w}"),
                    reset_duration(*retry_after_ms),
                ));
            }
            if *never || applied.kind.is_budget() {
                h.push(("x-should-retry".to_string(), "false".to_string()));
            }
            (e, h)
        }
    }
}

// ---------------------------------------------------------------- /v1/usage

fn usd(micros: u64) -> serde_json::Value {
    serde_json::json!(format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000))
}

fn counts_json(c: &Counts) -> serde_json::Value {
    serde_json::json!({
        "requests": { "minute": c.req_min, "day": c.req_day, "month": c.req_month },
        "tokens": { "minute": c.tok_min, "day": c.tok_day, "month": c.tok_month },
        "usd": { "day": usd(c.usd_day), "month": usd(c.usd_month) },
        "usd_micros": { "day": c.usd_day, "month": c.usd_month },
        "in_flight": c.in_flight,
    })
}

fn record_json(rec: &Record) -> serde_json::Value {
    let models: serde_json::Map<String, serde_json::Value> = rec
        .models
        .iter()
        .map(|(m, c)| (m.clone(), counts_json(c)))
        .collect();
    let mut v = counts_json(&rec.total);
    if let Some(o) = v.as_object_mut() {
        o.insert("models".into(), serde_json::Value::Object(models));
    }
    v
}

fn limit_json(a: &Applied, rec: &Record, now: &Window, now_ms: u64) -> serde_json::Value {
    let counts = match &a.model {
        None => rec.total,
        Some(m) => rec.model(m),
    };
    let used = counts.used(a.kind);
    let reset_ms = now.end_ms(a.kind).map(|e| e.saturating_sub(now_ms));
    let (value, used_v, remaining) = if a.kind.is_budget() {
        (usd(a.limit), usd(used), usd(a.limit.saturating_sub(used)))
    } else {
        (
            serde_json::json!(a.limit),
            serde_json::json!(used),
            serde_json::json!(a.limit.saturating_sub(used)),
        )
    };
    serde_json::json!({
        "limit": a.kind.name(),
        "level": a.level.name(),
        "model": a.model,
        "value": value,
        "used": used_v,
        "remaining": remaining,
        "reset": reset_ms.map(reset_duration),
        "reset_ms": reset_ms,
    })
}

/// The caller's own usage and allowance, as `/v1/usage` answers it: the
/// counters of the caller's record (and of the team's), and every limit
/// that applies with what is used and left in its current window. Limits
/// given per model appear for each model the caller may use that has one.
pub fn caller_report(
    store: &dyn Store,
    q: &Quotas,
    caller: &Caller,
    models: &[&str],
    now_ms: u64,
) -> serde_json::Value {
    let now = Window::at(now_ms);
    let own = read(store, &caller_key(&caller.id), now_ms);
    let team = caller
        .team
        .as_ref()
        .map(|t| read(store, &team_key(t), now_ms));
    let mut limits = Vec::new();
    let mut seen: Vec<(Kind, Option<String>)> = Vec::new();
    for m in models {
        for a in q.applied(caller, m) {
            if seen.contains(&(a.kind, a.model.clone())) {
                continue;
            }
            seen.push((a.kind, a.model.clone()));
            let rec = if a.on_team() {
                team.as_ref().unwrap_or(&own)
            } else {
                &own
            };
            limits.push(limit_json(&a, rec, &now, now_ms));
        }
    }
    serde_json::json!({
        "object": "usage",
        "caller": caller.id,
        "team": caller.team,
        "usage": record_json(&own),
        "team_usage": team.as_ref().map(record_json),
        "limits": limits,
        "windows": {
            "minute_reset_ms": now.end_ms(Kind::RequestsPerMinute).map(|e| e - now_ms),
            "day_reset_ms": now.end_ms(Kind::UsdPerDay).map(|e| e - now_ms),
            "month_reset_ms": now.end_ms(Kind::UsdPerMonth).map(|e| e.saturating_sub(now_ms)),
        },
    })
}

/// A team's counters, for admins.
pub fn team_report(store: &dyn Store, team: &str, now_ms: u64) -> serde_json::Value {
    let rec = read(store, &team_key(team), now_ms);
    serde_json::json!({
        "object": "team_usage",
        "team": team,
        "usage": record_json(&rec),
    })
}

#[cfg(test)]
pub(crate) mod tests;
