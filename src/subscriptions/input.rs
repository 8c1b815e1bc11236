//! Validation of `create_subscription_atomic`'s JSON arguments, before anything is written. Pure
//! Rust (serde_json only): every rule is unit-tested without Postgres.
use serde_json::{Map, Value};

/// Microseconds between 1970-01-01 and Postgres' epoch 2000-01-01 (UTC).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800 * 1_000_000;

/// The largest amount checkout stores, in minor units (about 10 billion dollars per interval): a
/// bound far above any real price that keeps every sum of amounts (metrics, refunds) in range. The
/// tables' CHECK constraints hold the same number (sql/schema.sql, `amount_in_range`).
pub const MAX_AMOUNT: i64 = 999_999_999_999;

/// The most elements `p_features` may have: far more than a plan grants, few enough that a call
/// stays fast (validation is linear, and each element is a row).
pub const MAX_FEATURES: usize = 10_000;

/// The one rule on how many elements `p_features` may have (checked before they are read, too).
pub fn feature_count(n: usize) -> Result<(), String> {
    if n > MAX_FEATURES {
        return Err(format!(
            "p_features has {n} elements, at most {MAX_FEATURES}"
        ));
    }
    Ok(())
}

/// A validated `p_subscription`. Times are Postgres timestamptz values (microseconds since 2000).
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    pub status: String,
    pub amount: i64,
    pub currency: String,
    pub interval: String,
    pub interval_count: i32,
    pub current_period_start: i64,
    pub current_period_end: i64,
    pub trial_start: Option<i64>,
    pub trial_end: Option<i64>,
    pub stripe_subscription_id: Option<String>,
    pub stripe_price_id: Option<String>,
    pub metadata: Value,
    pub product_version_id: Option<String>,
    pub price_version_id: Option<String>,
}

/// A validated, de-duplicated feature grant request.
#[derive(Debug, Clone, PartialEq)]
pub struct Feature {
    pub feature_id: String,
    pub metadata: Value,
}

const FIELDS: &[&str] = &[
    "status",
    "amount",
    "currency",
    "interval",
    "interval_count",
    "current_period_start",
    "current_period_end",
    "trial_start",
    "trial_end",
    "stripe_subscription_id",
    "stripe_price_id",
    "metadata",
    "product_version_id",
    "price_version_id",
];

/// Parses `p_subscription`; the error names the field.
pub fn subscription(value: &Value) -> Result<Subscription, String> {
    let object = value
        .as_object()
        .ok_or("p_subscription must be a JSON object")?;
    if let Some(unknown) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(format!(
            "p_subscription has an unknown field \"{}\"",
            shown(unknown)
        ));
    }
    let status = one_of(object, "status", &["trialing", "active", "incomplete"])?;
    let amount = match present(object, "amount") {
        Some(Value::Number(n)) => n.as_i64().filter(|a| (0..=MAX_AMOUNT).contains(a)),
        None => return Err("p_subscription.amount is required".into()),
        _ => None,
    }
    .ok_or("p_subscription.amount must be an integer from 0 to 999999999999 (minor units)")?;
    let currency = match present(object, "currency") {
        Some(Value::String(c)) if c.len() == 3 && c.bytes().all(|b| b.is_ascii_alphabetic()) => {
            c.to_ascii_lowercase()
        }
        None => return Err("p_subscription.currency is required".into()),
        _ => return Err("p_subscription.currency must be a 3-letter ISO 4217 code".into()),
    };
    let interval = one_of(object, "interval", &["day", "week", "month", "year"])?;
    let interval_count = match present(object, "interval_count") {
        None => 1,
        Some(Value::Number(n)) => {
            n.as_i64()
                .filter(|c| (1..=i64::from(i32::MAX)).contains(c))
                .ok_or("p_subscription.interval_count must be an integer >= 1")? as i32
        }
        Some(_) => return Err("p_subscription.interval_count must be an integer >= 1".into()),
    };
    let current_period_start = required_time(object, "current_period_start")?;
    let current_period_end = required_time(object, "current_period_end")?;
    if current_period_start > current_period_end {
        return Err(
            "p_subscription.current_period_start must not be after current_period_end".into(),
        );
    }
    let trial_end = optional_time(object, "trial_end")?;
    let trial_start = optional_time(object, "trial_start")?;
    match (trial_start, trial_end) {
        (Some(_), None) => return Err("p_subscription.trial_start requires trial_end".into()),
        (Some(s), Some(e)) if s > e => {
            return Err("p_subscription.trial_start must not be after trial_end".into())
        }
        _ => {}
    }
    if (status == "trialing") != trial_end.is_some() {
        return Err(
            "p_subscription.status must be \"trialing\" exactly when trial_end is set".into(),
        );
    }
    Ok(Subscription {
        status,
        amount,
        currency,
        interval,
        interval_count,
        current_period_start,
        current_period_end,
        // A trial without an explicit start starts with the period.
        trial_start: trial_end.map(|_| trial_start.unwrap_or(current_period_start)),
        trial_end,
        stripe_subscription_id: optional_string(object, "stripe_subscription_id")?,
        stripe_price_id: optional_string(object, "stripe_price_id")?,
        metadata: optional_object(object, "metadata", "p_subscription.metadata")?,
        product_version_id: optional_uuid(object, "product_version_id")?,
        price_version_id: optional_uuid(object, "price_version_id")?,
    })
}

/// Parses `p_features`: each `{"feature_id": uuid, "metadata": {...}}`; repeated ids are merged
/// (metadata objects combined, later keys win). Sorted by id, so the order does not matter.
pub fn features(elements: &[Option<Value>]) -> Result<Vec<Feature>, String> {
    feature_count(elements.len())?;
    // Keyed by id: merging costs n log n (a search of the list so far was quadratic).
    let mut merged: std::collections::BTreeMap<String, Value> = std::collections::BTreeMap::new();
    for (i, element) in elements.iter().enumerate() {
        let object = element
            .as_ref()
            .and_then(Value::as_object)
            .ok_or_else(|| format!("p_features[{}] must be a JSON object", i + 1))?;
        if let Some(unknown) = object
            .keys()
            .find(|k| *k != "feature_id" && *k != "metadata")
        {
            return Err(format!(
                "p_features[{}] has an unknown field \"{}\"",
                i + 1,
                shown(unknown)
            ));
        }
        let feature_id = match object.get("feature_id") {
            Some(Value::String(s)) if is_uuid(s) => s.to_ascii_lowercase(),
            _ => return Err(format!("p_features[{}].feature_id must be a UUID", i + 1)),
        };
        let metadata = optional_object(
            object,
            "metadata",
            &format!("p_features[{}].metadata", i + 1),
        )?;
        match merged.entry(feature_id) {
            std::collections::btree_map::Entry::Occupied(mut existing) => {
                if let (Some(into), Value::Object(from)) =
                    (existing.get_mut().as_object_mut(), metadata)
                {
                    into.extend(from);
                }
            }
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(metadata);
            }
        }
    }
    // Sorted by id (the map's order), so the order of the elements does not matter.
    Ok(merged
        .into_iter()
        .map(|(feature_id, metadata)| Feature {
            feature_id,
            metadata,
        })
        .collect())
}

/// A caller's text as an error message shows it: at most 64 characters, escaped, so the message
/// stays one short line whatever was sent (it also goes to the server log).
pub fn shown(text: &str) -> String {
    let mut out: String = text.chars().take(64).flat_map(char::escape_debug).collect();
    if text.chars().nth(64).is_some() {
        out.push('…');
    }
    out
}

/// A field that is present and not JSON null.
fn present<'a>(object: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    object.get(field).filter(|v| !v.is_null())
}

fn one_of(object: &Map<String, Value>, field: &str, allowed: &[&str]) -> Result<String, String> {
    match present(object, field) {
        Some(Value::String(s)) if allowed.contains(&s.as_str()) => Ok(s.clone()),
        None => Err(format!("p_subscription.{field} is required")),
        _ => Err(format!(
            "p_subscription.{field} must be one of {}",
            allowed.join(", ")
        )),
    }
}

fn optional_string(object: &Map<String, Value>, field: &str) -> Result<Option<String>, String> {
    match present(object, field) {
        None => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 255 => Ok(Some(s.clone())),
        Some(_) => Err(format!(
            "p_subscription.{field} must be a string of 1 to 255 characters"
        )),
    }
}

fn optional_uuid(object: &Map<String, Value>, field: &str) -> Result<Option<String>, String> {
    match present(object, field) {
        None => Ok(None),
        Some(Value::String(s)) if is_uuid(s) => Ok(Some(s.to_ascii_lowercase())),
        Some(_) => Err(format!("p_subscription.{field} must be a UUID")),
    }
}

fn optional_object(object: &Map<String, Value>, field: &str, name: &str) -> Result<Value, String> {
    match present(object, field) {
        None => Ok(Value::Object(Map::new())),
        Some(v @ Value::Object(_)) => Ok(v.clone()),
        Some(_) => Err(format!("{name} must be a JSON object")),
    }
}

fn required_time(object: &Map<String, Value>, field: &str) -> Result<i64, String> {
    optional_time(object, field)?.ok_or_else(|| format!("p_subscription.{field} is required"))
}

fn optional_time(object: &Map<String, Value>, field: &str) -> Result<Option<i64>, String> {
    match present(object, field) {
        None => Ok(None),
        Some(v) => parse_time(v).map(Some).ok_or_else(|| {
            format!("p_subscription.{field} must be an ISO 8601 time with offset (2026-01-31T12:00:00Z) or Unix seconds")
        }),
    }
}

/// The canonical lowercase 8-4-4-4-12 form.
pub fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Unix seconds (integer, as Stripe sends them) or `YYYY-MM-DD[(T| )hh:mm[:ss[.ffffff]](Z|±hh[:mm])]`
/// (a date alone is midnight UTC); returns Postgres microseconds since 2000-01-01 UTC.
pub fn parse_time(value: &Value) -> Option<i64> {
    let unix_micros = match value {
        Value::Number(n) => n.as_i64()?.checked_mul(1_000_000)?,
        Value::String(s) => parse_iso8601(s)?,
        _ => return None,
    };
    // Postgres' timestamptz range is 4713 BC to 294276 AD; keep to years 1..9999.
    const MIN: i64 = -62_135_596_800 * 1_000_000;
    const MAX: i64 = 253_402_300_799 * 1_000_000;
    (MIN..=MAX)
        .contains(&unix_micros)
        .then(|| unix_micros - PG_EPOCH_OFFSET_MICROS)
}

fn parse_iso8601(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let digits = b.get(from..from + len)?;
        digits.iter().all(u8::is_ascii_digit).then(|| {
            digits
                .iter()
                .fold(0i64, |n, d| n * 10 + i64::from(d - b'0'))
        })
    };
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    if b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
    {
        return None;
    }
    let mut seconds = days_from_civil(year, month, day) * 86_400;
    if b.len() == 10 {
        return seconds.checked_mul(1_000_000);
    }
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) || b.get(13) != Some(&b':') {
        return None;
    }
    let (hour, minute) = (num(11, 2)?, num(14, 2)?);
    let mut i = 16;
    let mut second = 0;
    let mut micros = 0;
    if b.get(i) == Some(&b':') {
        second = num(17, 2)?;
        i = 19;
        if b.get(i) == Some(&b'.') {
            let start = i + 1;
            let mut end = start;
            while end < b.len() && b[end].is_ascii_digit() {
                end += 1;
            }
            if end == start || end - start > 6 {
                return None;
            }
            micros = num(start, end - start)? * 10i64.pow((6 - (end - start)) as u32);
            i = end;
        }
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let offset = match b.get(i..)? {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), rest @ ..] => {
            let (oh, om) = match rest.len() {
                2 => (num(i + 1, 2)?, 0),
                4 => (num(i + 1, 2)?, num(i + 3, 2)?),
                5 if rest[2] == b':' => (num(i + 1, 2)?, num(i + 4, 2)?),
                _ => return None,
            };
            if oh > 15 || om > 59 {
                return None;
            }
            let off = oh * 3600 + om * 60;
            if *sign == b'+' {
                off
            } else {
                -off
            }
        }
        _ => return None, // a time without an offset would depend on the session's TimeZone
    };
    seconds += hour * 3600 + minute * 60 + second - offset;
    Some(seconds * 1_000_000 + micros)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod unit_tests {
    use super::*;
    use serde_json::json;

    fn valid() -> Value {
        json!({"status": "active", "amount": 1999, "currency": "USD", "interval": "month",
               "current_period_start": "2026-01-01T00:00:00Z", "current_period_end": "2026-02-01T00:00:00Z"})
    }

    fn error_with(field: &str, value: Value) -> String {
        let mut v = valid();
        v[field] = value;
        subscription(&v).expect_err(field)
    }

    #[test]
    fn accepts_a_valid_subscription() {
        let s = subscription(&valid()).unwrap();
        assert_eq!(
            (s.currency.as_str(), s.interval_count, s.amount),
            ("usd", 1, 1999)
        );
        assert_eq!(
            s.current_period_end - s.current_period_start,
            31 * 86_400 * 1_000_000
        );
        assert_eq!(s.trial_start, None);
    }

    #[test]
    fn rejects_each_bad_field_by_name() {
        assert!(error_with("curency", json!("usd")).contains("unknown field \"curency\""));
        let long = error_with(&format!("{}\nx", "k".repeat(300)), json!(1));
        assert!(long.len() < 150 && !long.contains('\n'), "{long}");
        assert!(error_with("status", json!("bogus_status")).contains("status"));
        assert!(error_with("status", json!("canceled")).contains("status"));
        assert!(error_with("amount", json!(-1)).contains("amount"));
        assert!(error_with("amount", json!(10.5)).contains("amount"));
        assert!(error_with("amount", json!("100")).contains("amount"));
        assert!(error_with("amount", json!(MAX_AMOUNT + 1)).contains("amount"));
        assert!(error_with("amount", json!(i64::MAX)).contains("amount"));
        assert!(subscription(&{
            let mut v = valid();
            v["amount"] = json!(MAX_AMOUNT);
            v
        })
        .is_ok());
        assert!(error_with("currency", json!("dollars")).contains("currency"));
        assert!(error_with("interval", json!("fortnight")).contains("interval"));
        assert!(error_with("interval_count", json!(0)).contains("interval_count"));
        assert!(
            error_with("current_period_end", json!("2025-12-01T00:00:00Z"))
                .contains("current_period_start")
        );
        assert!(
            error_with("current_period_end", json!("next month")).contains("current_period_end")
        );
        assert!(error_with("current_period_end", Value::Null)
            .contains("current_period_end is required"));
        assert!(error_with("metadata", json!([1])).contains("metadata"));
        assert!(error_with("stripe_subscription_id", json!(42)).contains("stripe_subscription_id"));
        assert!(error_with("trial_end", json!("2026-01-15T00:00:00Z")).contains("trialing"));
        let mut trialing = valid();
        trialing["status"] = json!("trialing");
        assert!(subscription(&trialing).unwrap_err().contains("trialing"));
        trialing["trial_end"] = json!("2026-01-15T00:00:00Z");
        trialing["trial_start"] = json!("2026-01-20T00:00:00Z");
        assert!(subscription(&trialing).unwrap_err().contains("trial_start"));
        assert!(subscription(&json!([1, 2])).unwrap_err().contains("object"));
        let mut missing = valid();
        missing.as_object_mut().unwrap().remove("amount");
        assert!(subscription(&missing)
            .unwrap_err()
            .contains("amount is required"));
    }

    #[test]
    fn trial_defaults_its_start_to_the_period_start() {
        let mut v = valid();
        v["status"] = json!("trialing");
        v["trial_end"] = json!(1_768_435_200); // Unix seconds, as Stripe sends them
        let s = subscription(&v).unwrap();
        assert_eq!(s.trial_start, Some(s.current_period_start));
        assert_eq!(s.trial_end, parse_time(&json!("2026-01-15T00:00:00Z")));
    }

    #[test]
    fn times() {
        let t = |s: &str| parse_time(&json!(s));
        assert_eq!(t("2000-01-01T00:00:00Z"), Some(0));
        assert_eq!(t("2000-01-01"), Some(0));
        assert_eq!(t("2000-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(
            t("2000-01-01 00:00:00.5-0030"),
            Some(1_800_000_000 + 500_000)
        );
        assert_eq!(t("1999-12-31T23:59:59.999999Z"), Some(-1));
        assert_eq!(
            t("2024-02-29T00:00Z"),
            Some(days_from_civil(2024, 2, 29) * 86_400_000_000 - PG_EPOCH_OFFSET_MICROS)
        );
        for bad in [
            "2023-02-29",
            "2026-13-01",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00+1",
            "",
            "x",
            "2026-01-01T00:00:00.1234567Z",
        ] {
            assert_eq!(t(bad), None, "{bad}");
        }
        assert_eq!(parse_time(&json!(946_684_800)), Some(0));
        assert_eq!(parse_time(&json!(1.5)), None);
        assert_eq!(parse_time(&json!(i64::MAX)), None);
    }

    #[test]
    fn features_are_validated_and_merged() {
        let a = "0f000000-0000-0000-0000-00000000000a";
        let b = "0f000000-0000-0000-0000-00000000000b";
        let f = features(&[
            Some(json!({"feature_id": b})),
            Some(json!({"feature_id": a, "metadata": {"x": 1}})),
            Some(json!({"feature_id": a.to_uppercase(), "metadata": {"y": 2}})),
        ])
        .unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(
            f[0],
            Feature {
                feature_id: a.into(),
                metadata: json!({"x": 1, "y": 2})
            }
        );
        assert!(features(&[None]).unwrap_err().contains("p_features[1]"));
        assert!(features(&[Some(json!({"feature_id": "nope"}))])
            .unwrap_err()
            .contains("feature_id"));
        assert!(features(&[Some(json!({"feature_id": a, "extra": 1}))])
            .unwrap_err()
            .contains("extra"));
        assert!(features(&[Some(json!({"feature_id": a, "metadata": "x"}))])
            .unwrap_err()
            .contains("metadata"));
    }

    #[test]
    fn features_are_bounded_and_merged_by_id() {
        let id = |i: usize| format!("0f000000-0000-0000-0000-{i:012x}");
        let many: Vec<Option<Value>> = (0..MAX_FEATURES)
            .rev()
            .map(|i| Some(json!({"feature_id": id(i % 5000)})))
            .collect();
        let merged = features(&many).unwrap();
        assert_eq!(merged.len(), 5000);
        assert!(merged.windows(2).all(|w| w[0].feature_id < w[1].feature_id));
        let too_many = vec![Some(json!({"feature_id": id(1)})); MAX_FEATURES + 1];
        assert!(features(&too_many).unwrap_err().contains("at most 10000"));
    }
}
