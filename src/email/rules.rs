//! The pure core of `normalize_email`: no pgrx types, so it is unit- and property-tested without
//! Postgres. One canonical form per mailbox, so that address variants of one person are caught.
//!
//! Rules (version [`RULES_VERSION`]), applied in this order:
//! 1. trim surrounding white space; drop every character that renders as nothing (Unicode's
//!    Default_Ignorable_Code_Point class: zero-width spaces and joiners, soft hyphen, bidi
//!    controls, variation selectors, tags, ...) so an invisible one cannot make a new mailbox;
//!    reject control or white-space characters inside, and inputs longer than [`MAX_LEN`]
//!    characters;
//! 2. Unicode NFKC, then lowercase (ASCII input skips both: it is already NFKC);
//! 3. exactly one `@`, non-empty local part and domain;
//! 4. domain: one trailing dot dropped, IDNA (UTS #46) to its ASCII form (`exämple.com` ->
//!    `xn--exmple-cua.com`), must be a hostname of two or more labels with a non-numeric TLD;
//! 5. local part: everything from the first `+` dropped (every domain);
//! 6. providers: Gmail (`googlemail.com` -> `gmail.com`, dots dropped); Yahoo (`yahoo.*`,
//!    `ymail.com`, `rocketmail.com`: everything from the first `-` dropped, since Yahoo base names
//!    cannot contain `-`); Proton (`protonmail.com`, `protonmail.ch`, `proton.me`, `pm.me`: dots,
//!    hyphens and underscores dropped); Apple (`me.com`, `mac.com` -> `icloud.com`);
//! 7. the local part must still be non-empty, and the result at most [`MAX_LEN`] characters.
//!
//! The output is a fixed point: `normalize(normalize(x)) == normalize(x)`.
use std::fmt;
use unicode_normalization::UnicodeNormalization;

/// Bump when any rule changes: stored forms carry it, and `renormalize_email_variants()` recomputes
/// rows written under another version.
pub const RULES_VERSION: i32 = 2; // 2 (0.6.0): default-ignorable code points dropped

/// RFC 5321's limit on a forward path, in characters.
pub const MAX_LEN: usize = 254;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmailError {
    TooLong(usize),
    ControlOrSpace,
    NoAt,
    SeveralAt,
    EmptyLocal,
    EmptyDomain,
    InvalidDomain,
}

impl fmt::Display for EmailError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EmailError::TooLong(n) => write!(
                f,
                "email address is too long ({n} characters, at most {MAX_LEN})"
            ),
            EmailError::ControlOrSpace => {
                f.write_str("email address contains a control or white-space character")
            }
            EmailError::NoAt => f.write_str("email address has no \"@\""),
            EmailError::SeveralAt => f.write_str("email address has more than one \"@\""),
            EmailError::EmptyLocal => f.write_str("email address has an empty local part"),
            EmailError::EmptyDomain => f.write_str("email address has an empty domain"),
            EmailError::InvalidDomain => f.write_str("email domain is not a valid hostname"),
        }
    }
}

/// How much longer than its input the ASCII path may write: a provider's domain can be longer than
/// the input's (`me.com` -> `icloud.com`), and is written before the length check.
pub const ASCII_GROWTH: usize = 4;

/// Room for the ASCII path's output for any input it accepts (at most [`MAX_LEN`] bytes).
pub const ASCII_OUT: usize = MAX_LEN + ASCII_GROWTH;

/// The canonical form of an email address, or why it is not one.
pub fn normalize(input: &str) -> Result<String, EmailError> {
    let trimmed = input.trim();
    if trimmed.is_ascii() {
        let mut out = [0u8; ASCII_OUT];
        if let Some(result) = normalize_ascii(trimmed.as_bytes(), &mut out) {
            // ASCII bytes: valid UTF-8.
            return result.map(|n| out[..n].iter().map(|&c| c as char).collect());
        }
    }
    normalize_general(trimmed)
}

/// The hot path: a trimmed plain ASCII address, written into `out` (at least `b.len()` +
/// [`ASCII_GROWTH`] bytes) without allocating; returns the length written. None for what it leaves
/// to the general path (punycode labels, and domains with characters a hostname cannot have, which
/// that path reports). Must agree with [`normalize_general`] wherever it answers (property-tested).
pub fn normalize_ascii(b: &[u8], out: &mut [u8]) -> Option<Result<usize, EmailError>> {
    if b.len() > MAX_LEN {
        return Some(Err(EmailError::TooLong(b.len())));
    }
    if out.len() < b.len() + ASCII_GROWTH {
        return None; // a caller's mistake: the general path still answers
    }
    // Control characters are reported first (a branch-free scan: the compiler vectorizes it).
    if b.iter()
        .fold(false, |bad, &c| bad | (c < 0x21) | (c == 0x7f))
    {
        return Some(Err(EmailError::ControlOrSpace));
    }
    let Some(at) = b.iter().position(|&c| c == b'@') else {
        return Some(Err(EmailError::NoAt));
    };
    let (local, domain) = (&b[..at], &b[at + 1..]);
    if domain.contains(&b'@') {
        return Some(Err(EmailError::SeveralAt));
    }
    if local.is_empty() {
        return Some(Err(EmailError::EmptyLocal));
    }
    let domain = domain.strip_suffix(b".").unwrap_or(domain);
    if domain.is_empty() {
        return Some(Err(EmailError::EmptyDomain));
    }
    if domain.len() > 253 {
        return Some(Err(EmailError::InvalidDomain));
    }
    // Providers are recognized before lowercasing; their canonical domains are valid hostnames.
    let rules = provider(domain);
    // The local part, lowercased, up to the first '+' (Yahoo: also '-'), then the dropped
    // characters squeezed out.
    let end = local
        .iter()
        .position(|&c| (c == b'+') | (rules.cut_at_dash & (c == b'-')))
        .unwrap_or(local.len());
    for (d, &c) in out.iter_mut().zip(&local[..end]) {
        *d = c.to_ascii_lowercase();
    }
    // (`iter().any`, not `contains`: for bytes that is a memchr call per character.)
    let dropped = |c: u8| rules.dropped.contains(&c);
    let mut n = end;
    if let Some(first) = out[..end].iter().position(|&c| dropped(c)) {
        n = first;
        for i in first..end {
            let c = out[i];
            out[n] = c;
            n += usize::from(!dropped(c));
        }
    }
    // The domain, lowercased after the '@', checked label by label in order as letter-digit-hyphen
    // labels; other characters (rare: an invalid domain) are left to the general path.
    out[n] = b'@';
    let dl = match rules.canonical {
        Some(p) => {
            out[n + 1..n + 1 + p.len()].copy_from_slice(p.as_bytes());
            p.len()
        }
        None => {
            let lower = &mut out[n + 1..n + 1 + domain.len()];
            for (d, &c) in lower.iter_mut().zip(domain) {
                *d = c.to_ascii_lowercase();
            }
            let ldh =
                |c: u8| c.is_ascii_lowercase() | c.is_ascii_digit() | (c == b'-') | (c == b'.');
            if !lower.iter().fold(true, |ok, &c| ok & ldh(c)) {
                return None;
            }
            let mut labels = 0;
            let mut tld: &[u8] = b"";
            for label in lower.split(|&c| c == b'.') {
                if label.starts_with(b"xn--") {
                    return None; // punycode: validated by the IDNA machinery
                }
                if !valid_ldh_bytes(label) {
                    return Some(Err(EmailError::InvalidDomain));
                }
                labels += 1;
                tld = label;
            }
            if labels < 2 || tld.iter().all(u8::is_ascii_digit) {
                return Some(Err(EmailError::InvalidDomain));
            }
            domain.len()
        }
    };
    if n == 0 {
        return Some(Err(EmailError::EmptyLocal));
    }
    let len = n + 1 + dl;
    if len > MAX_LEN {
        return Some(Err(EmailError::TooLong(len)));
    }
    Some(Ok(len))
}

/// Characters that render as nothing, dropped from addresses: Unicode's Default_Ignorable_Code_Point
/// ranges (DerivedCoreProperties.txt, Unicode 15.1: what a renderer shows as nothing when it has no
/// glyph for it), plus the invisible format characters that class leaves out (U+FFF9..FFFB
/// interlinear annotation controls, U+13430..1343F Egyptian hieroglyph format controls) and U+2800
/// BRAILLE PATTERN BLANK. Sorted, disjoint; all outside ASCII.
const DEFAULT_IGNORABLE: &[(u32, u32)] = &[
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x2800, 0x2800),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFFB),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
];

pub fn is_default_ignorable(c: char) -> bool {
    let c = c as u32;
    c >= 0xAD
        && DEFAULT_IGNORABLE
            .binary_search_by(|&(lo, hi)| {
                if hi < c {
                    std::cmp::Ordering::Less
                } else if lo > c {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Equal
                }
            })
            .is_ok()
}

/// NFKC, lowercase, NFKC again (lowercasing can leave a string that is not NFKC), with the
/// default-ignorable characters dropped before and after: NFKC can produce one (U+3164 -> U+1160),
/// and dropping one can bring a base letter and a combining mark together.
fn fold(s: &str) -> String {
    let mut s: String = s.chars().filter(|&c| !is_default_ignorable(c)).collect();
    loop {
        let lowered = s.nfkc().collect::<String>().to_lowercase();
        let folded: String = lowered.nfkc().collect();
        if !folded.chars().any(is_default_ignorable) {
            return folded;
        }
        s = folded
            .chars()
            .filter(|&c| !is_default_ignorable(c))
            .collect();
    }
}

/// Every input: Unicode folding, IDNA.
fn normalize_general(trimmed: &str) -> Result<String, EmailError> {
    let chars = trimmed.chars().count();
    if chars > MAX_LEN {
        return Err(EmailError::TooLong(chars));
    }
    if trimmed.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(EmailError::ControlOrSpace);
    }
    let folded = if trimmed.is_ascii() {
        trimmed.to_ascii_lowercase()
    } else {
        let folded = fold(trimmed);
        // Compatibility forms can map to spaces or controls (e.g. U+2028 is caught above, but
        // U+FE6B maps to '@'); check again on what NFKC produced.
        if folded.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(EmailError::ControlOrSpace);
        }
        folded
    };

    let mut parts = folded.split('@');
    let (local, domain) = match (parts.next(), parts.next(), parts.next()) {
        (Some(local), Some(domain), None) => (local, domain),
        (_, None, _) => return Err(EmailError::NoAt),
        _ => return Err(EmailError::SeveralAt),
    };
    if local.is_empty() {
        return Err(EmailError::EmptyLocal);
    }
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if domain.is_empty() {
        return Err(EmailError::EmptyDomain);
    }
    let ascii_domain = to_ascii_hostname(domain)?;
    let rules = provider(ascii_domain.as_bytes());
    let domain = rules.canonical.unwrap_or(&ascii_domain);

    let mut local = match local.find('+') {
        Some(i) => &local[..i],
        None => local,
    };
    if rules.cut_at_dash {
        if let Some(i) = local.find('-') {
            local = &local[..i];
        }
    }
    let kept = |c: &char| !(c.is_ascii() && rules.dropped.contains(&(*c as u8)));
    let mut out = String::with_capacity(local.len() + 1 + domain.len());
    if local.is_ascii() {
        out.extend(local.chars().filter(kept));
    } else {
        // Dropping a character can bring a base letter and a combining mark together: recompose.
        out.extend(local.chars().filter(kept).nfkc());
    }
    if out.is_empty() {
        return Err(EmailError::EmptyLocal);
    }
    out.push('@');
    out.push_str(domain);
    let len = out.chars().count();
    if len > MAX_LEN {
        return Err(EmailError::TooLong(len));
    }
    Ok(out)
}

/// What a mail provider's rules (6 in the module comment) do to an address on its domain.
struct Provider {
    /// The one domain of the provider's aliases (`googlemail.com` -> `gmail.com`); None: as is.
    canonical: Option<&'static str>,
    /// Characters of the local part the provider ignores.
    dropped: &'static [u8],
    /// Yahoo: the disposable keyword starts at the first `-`.
    cut_at_dash: bool,
}

/// The rules for an ASCII `domain`, in any case (the ASCII path asks before lowercasing). The one
/// table of providers, for both paths.
fn provider(domain: &[u8]) -> Provider {
    let is = |name: &str| domain.eq_ignore_ascii_case(name.as_bytes());
    let plain = Provider {
        canonical: None,
        dropped: b"",
        cut_at_dash: false,
    };
    if is("gmail.com") || is("googlemail.com") {
        Provider {
            canonical: Some("gmail.com"),
            dropped: b".",
            ..plain
        }
    } else if is("me.com") || is("mac.com") {
        Provider {
            canonical: Some("icloud.com"),
            ..plain
        }
    } else if ["protonmail.com", "protonmail.ch", "proton.me", "pm.me"]
        .into_iter()
        .any(is)
    {
        Provider {
            dropped: b".-_",
            ..plain
        }
    } else if domain
        .get(..6)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"yahoo."))
        || is("ymail.com")
        || is("rocketmail.com")
    {
        Provider {
            cut_at_dash: true,
            ..plain
        }
    } else {
        plain
    }
}

/// IDNA (UTS #46, strict: STD3 characters, hyphen positions, DNS lengths) to the ASCII form, then
/// our own hostname rule: at least two labels, and a TLD that is not all digits (no IP addresses).
/// Plain lowercase ASCII hostnames skip the IDNA machinery; the checks they get are the same.
fn to_ascii_hostname(domain: &str) -> Result<String, EmailError> {
    let plain = domain
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    let ascii = if plain && !domain.split('.').any(|l| l.starts_with("xn--")) {
        if domain.len() > 253 || !domain.split('.').all(valid_ldh_label) {
            return Err(EmailError::InvalidDomain);
        }
        domain.to_owned()
    } else {
        idna::domain_to_ascii_strict(domain).map_err(|_| EmailError::InvalidDomain)?
    };
    let mut labels = ascii.rsplit('.');
    let tld = labels.next().unwrap_or("");
    if labels.next().is_none() || tld.bytes().all(|b| b.is_ascii_digit()) {
        return Err(EmailError::InvalidDomain);
    }
    Ok(ascii)
}

/// A letter-digit-hyphen label as UTS #46 strict mode checks it.
fn valid_ldh_label(label: &str) -> bool {
    valid_ldh_bytes(label.as_bytes())
}

fn valid_ldh_bytes(b: &[u8]) -> bool {
    !b.is_empty()
        && b.len() <= 63
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && !(b.len() >= 4 && b[2] == b'-' && b[3] == b'-')
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    /// (input, expected canonical form or error)
    const CASES: &[(&str, Result<&str, EmailError>)] = &[
        // plain addresses, case and white space
        ("alice@example.com", Ok("alice@example.com")),
        ("Alice@Example.COM", Ok("alice@example.com")),
        ("  bob@example.com\t", Ok("bob@example.com")),
        ("\u{a0}bob@example.com\u{3000}", Ok("bob@example.com")),
        ("first.last@example.com", Ok("first.last@example.com")),
        ("first_last-x@example.org", Ok("first_last-x@example.org")),
        ("o'brien@example.ie", Ok("o'brien@example.ie")),
        (
            "user@sub.mail.example.co.uk",
            Ok("user@sub.mail.example.co.uk"),
        ),
        ("user@example.com.", Ok("user@example.com")),
        // sub-addresses, every domain
        ("alice+news@example.com", Ok("alice@example.com")),
        ("alice+a+b@example.com", Ok("alice@example.com")),
        ("alice+@example.com", Ok("alice@example.com")),
        ("first.last+tag@Company.io", Ok("first.last@company.io")),
        // Gmail: the seed's case bug (domain compared before lowercasing) and googlemail
        ("John.Doe+tag@GMAIL.COM", Ok("johndoe@gmail.com")),
        ("j.o.h.n.d.o.e@gmail.com", Ok("johndoe@gmail.com")),
        ("X.Y+3@GMail.com", Ok("xy@gmail.com")),
        ("x.y@googlemail.com", Ok("xy@gmail.com")),
        ("X.Y+promo@GoogleMail.Com", Ok("xy@gmail.com")),
        ("johndoe@gmail.com.", Ok("johndoe@gmail.com")),
        // dots matter outside Gmail, Google Workspace domains included
        (
            "john.doe@workspace-customer.com",
            Ok("john.doe@workspace-customer.com"),
        ),
        ("john.doe@google.com", Ok("john.doe@google.com")),
        // Yahoo disposable addresses
        ("alice-shopping@yahoo.com", Ok("alice@yahoo.com")),
        ("alice-a-b@yahoo.co.uk", Ok("alice@yahoo.co.uk")),
        ("Alice-x+y@YAHOO.FR", Ok("alice@yahoo.fr")),
        ("bob-news@ymail.com", Ok("bob@ymail.com")),
        ("bob-news@rocketmail.com", Ok("bob@rocketmail.com")),
        ("bob-news@notyahoo.com", Ok("bob-news@notyahoo.com")),
        ("a.b@yahoo.com", Ok("a.b@yahoo.com")),
        // Proton
        ("first.last@protonmail.com", Ok("firstlast@protonmail.com")),
        ("first-last_x@protonmail.ch", Ok("firstlastx@protonmail.ch")),
        ("First.Last+t@Proton.Me", Ok("firstlast@proton.me")),
        ("f_l@pm.me", Ok("fl@pm.me")),
        // Apple
        ("steve@me.com", Ok("steve@icloud.com")),
        ("steve@MAC.com", Ok("steve@icloud.com")),
        ("steve.j@icloud.com", Ok("steve.j@icloud.com")),
        // Unicode compatibility forms: full-width letters and at sign, ligatures
        (
            "\u{ff21}\u{ff4c}\u{ff49}\u{ff43}\u{ff45}@example.com",
            Ok("alice@example.com"),
        ),
        ("alice\u{ff20}example.com", Ok("alice@example.com")),
        ("\u{fb01}nance@example.com", Ok("finance@example.com")),
        ("JOS\u{c9}@example.com", Ok("jos\u{e9}@example.com")),
        ("jose\u{301}@example.com", Ok("jos\u{e9}@example.com")),
        // internationalized domains
        ("user@ex\u{e4}mple.com", Ok("user@xn--exmple-cua.com")),
        ("user@EX\u{c4}MPLE.COM", Ok("user@xn--exmple-cua.com")),
        ("user@xn--exmple-cua.com", Ok("user@xn--exmple-cua.com")),
        ("user@XN--EXMPLE-CUA.COM", Ok("user@xn--exmple-cua.com")),
        (
            "user@\u{4f8b}\u{3048}.\u{30c6}\u{30b9}\u{30c8}",
            Ok("user@xn--r8jz45g.xn--zckzah"),
        ),
        (
            "\u{3086}\u{3046}\u{3053}@example.jp",
            Ok("\u{3086}\u{3046}\u{3053}@example.jp"),
        ),
        // invalid: each kind
        ("no-at-sign", Err(EmailError::NoAt)),
        ("", Err(EmailError::NoAt)),
        ("   ", Err(EmailError::NoAt)),
        ("a@b@c.com", Err(EmailError::SeveralAt)),
        ("@example.com", Err(EmailError::EmptyLocal)),
        ("+tag@example.com", Err(EmailError::EmptyLocal)),
        ("+x@gmail.com", Err(EmailError::EmptyLocal)),
        ("...@gmail.com", Err(EmailError::EmptyLocal)),
        ("-x@yahoo.com", Err(EmailError::EmptyLocal)),
        ("._-@proton.me", Err(EmailError::EmptyLocal)),
        ("alice@", Err(EmailError::EmptyDomain)),
        ("alice@.", Err(EmailError::EmptyDomain)),
        ("alice@localhost", Err(EmailError::InvalidDomain)),
        ("alice@exa_mple.com", Err(EmailError::InvalidDomain)),
        ("alice@-example.com", Err(EmailError::InvalidDomain)),
        ("alice@example-.com", Err(EmailError::InvalidDomain)),
        ("alice@example..com", Err(EmailError::InvalidDomain)),
        ("alice@[127.0.0.1]", Err(EmailError::InvalidDomain)),
        ("alice@127.0.0.1", Err(EmailError::InvalidDomain)),
        ("alice@xn--zz.com", Err(EmailError::InvalidDomain)),
        ("alice@ab--cd.com", Err(EmailError::InvalidDomain)),
        ("alice@exam ple.com", Err(EmailError::ControlOrSpace)),
        ("ali ce@example.com", Err(EmailError::ControlOrSpace)),
        ("alice\u{0}@example.com", Err(EmailError::ControlOrSpace)),
        (
            "alice@example.com\r\nBcc: x@y.com",
            Err(EmailError::ControlOrSpace),
        ),
        ("alice\u{7f}@example.com", Err(EmailError::ControlOrSpace)),
        // Characters that render as nothing do not make another mailbox (rules version 2).
        ("alice\u{200b}@gmail.com", Ok("alice@gmail.com")),
        ("al\u{ad}ice\u{feff}@Gmail.com", Ok("alice@gmail.com")),
        (
            "a\u{2060}l\u{e0041}ice@example.com",
            Ok("alice@example.com"),
        ),
        ("alice@exa\u{200d}mple.com", Ok("alice@example.com")),
        ("\u{200b}\u{200c}@example.com", Err(EmailError::EmptyLocal)),
    ];

    #[test]
    fn case_table() {
        assert!(CASES.len() >= 50);
        for (input, expected) in CASES {
            let want = expected.clone().map(String::from);
            assert_eq!(normalize(input), want, "input {input:?}");
        }
    }

    #[test]
    fn length_limits() {
        let local = "a".repeat(64);
        let domain = format!("{}.com", "b".repeat(63));
        assert!(normalize(&format!("{local}@{domain}")).is_ok());
        let long = format!(
            "{}@{}.{}.{}.{}.com",
            "e".repeat(60),
            "a".repeat(60),
            "b".repeat(60),
            "c".repeat(60),
            "d".repeat(60)
        );
        assert_eq!(
            normalize(&long),
            Err(EmailError::TooLong(long.chars().count()))
        );
        assert_eq!(
            normalize(&format!("a@{}.com", "b".repeat(64))),
            Err(EmailError::InvalidDomain)
        );
    }

    #[test]
    fn every_default_ignorable_range_is_dropped() {
        assert!(DEFAULT_IGNORABLE
            .windows(2)
            .all(|w| w[0].1 < w[1].0 && w[0].0 <= w[0].1));
        for &(lo, hi) in DEFAULT_IGNORABLE {
            for cp in [lo, (lo + hi) / 2, hi] {
                let c = char::from_u32(cp).expect("a scalar value");
                assert!(is_default_ignorable(c), "U+{cp:04X}");
                let email = format!("al{c}ice@gmail.com");
                assert_eq!(
                    normalize(&email).as_deref(),
                    Ok("alice@gmail.com"),
                    "U+{cp:04X}"
                );
            }
            for cp in [lo - 1, hi + 1] {
                let c = char::from_u32(cp).expect("a scalar value");
                let inside = DEFAULT_IGNORABLE
                    .iter()
                    .any(|&(l, h)| (l..=h).contains(&cp));
                assert_eq!(is_default_ignorable(c), inside, "U+{cp:04X}");
            }
        }
        assert!(!is_default_ignorable('a') && !is_default_ignorable('\u{e9}'));
    }

    #[test]
    fn every_error_message_is_one_line() {
        for (_, expected) in CASES {
            if let Err(e) = expected {
                assert!(!e.to_string().contains('\n'));
            }
        }
    }

    /// A small deterministic generator (xorshift) for property tests, no extra crate needed.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn pick<T: Copy>(&mut self, items: &[T]) -> T {
            items[(self.next() % items.len() as u64) as usize]
        }
    }

    /// Strings built from the characters that matter to the rules, plus arbitrary code points.
    fn arbitrary_strings(n: usize) -> Vec<String> {
        let alphabet: &[&str] = &[
            "a",
            "Z",
            "0",
            ".",
            "-",
            "_",
            "+",
            "@",
            " ",
            "\t",
            "\u{0}",
            "\u{7f}",
            "\u{200b}",
            "\u{ad}",
            "\u{3164}",
            "\u{fe0f}",
            "\u{e0100}",
            "e\u{200b}\u{301}",
            "gmail.com",
            "GoogleMail.com",
            "yahoo.",
            "com",
            "pm.me",
            "me.com",
            "xn--",
            "\u{e4}",
            "\u{ff21}",
            "\u{ff20}",
            "\u{fb01}",
            "\u{301}",
            "\u{130}",
            "\u{3a3}",
            "\u{df}",
            "\u{2028}",
            "\u{fe6b}",
            "\u{200d}",
            "\u{1f600}",
            "..",
            "@@",
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        (0..n)
            .map(|_| {
                let len = (rng.next() % 12) as usize;
                let mut s = String::new();
                for _ in 0..len {
                    if rng.next().is_multiple_of(5) {
                        s.push(char::from_u32((rng.next() % 0x3_0000) as u32).unwrap_or('x'));
                    } else {
                        s.push_str(rng.pick(alphabet));
                    }
                }
                if rng.next().is_multiple_of(2) {
                    let d = rng.pick(&[
                        "gmail.com",
                        "example.com",
                        "yahoo.de",
                        "proton.me",
                        "ex\u{e4}mple.org",
                        "ME.COM",
                    ]);
                    s = format!("{s}@{d}");
                }
                s
            })
            .collect()
    }

    #[test]
    fn property_never_panics_and_is_idempotent() {
        let mut valid = 0;
        for s in arbitrary_strings(200_000) {
            let Ok(once) = normalize(&s) else { continue };
            valid += 1;
            assert_eq!(
                normalize(&once).as_deref(),
                Ok(once.as_str()),
                "not idempotent for {s:?}"
            );
            assert_eq!(once.matches('@').count(), 1, "{s:?} -> {once:?}");
            let domain = once.rsplit_once('@').map_or("", |(_, d)| d);
            assert!(
                domain.bytes().all(|b| b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || b == b'.'
                    || b == b'-'),
                "{s:?} -> {once:?}"
            );
            assert!(!once.starts_with('@') && once.chars().count() <= MAX_LEN);
        }
        assert!(
            valid > 10_000,
            "the generator should produce many valid addresses, got {valid}"
        );
    }

    /// The ASCII path's answer as a String (it writes bytes into a buffer).
    fn fast(trimmed: &str) -> Option<Result<String, EmailError>> {
        let mut out = [0u8; ASCII_OUT];
        normalize_ascii(trimmed.as_bytes(), &mut out)
            .map(|r| r.map(|n| String::from_utf8(out[..n].to_vec()).expect("ASCII output")))
    }

    #[test]
    fn property_ascii_fast_path_agrees_with_the_general_path() {
        let mut checked = 0;
        for s in arbitrary_strings(200_000) {
            let trimmed = s.trim();
            if !trimmed.is_ascii() {
                continue;
            }
            if let Some(fast) = fast(trimmed) {
                checked += 1;
                assert_eq!(fast, normalize_general(trimmed), "{s:?}");
            }
        }
        for (input, _) in CASES {
            let trimmed = input.trim();
            if let Some(fast) = trimmed.is_ascii().then(|| fast(trimmed)).flatten() {
                assert_eq!(fast, normalize_general(trimmed), "{input:?}");
            }
        }
        // The longest inputs, with the provider domain that grows.
        for local in [253, 250, 248, 247] {
            let input = format!("{}@me.com", "a".repeat(local));
            if input.len() <= MAX_LEN {
                assert_eq!(fast(&input), Some(normalize_general(&input)), "{input}");
            }
        }
        assert!(checked > 10_000, "{checked}");
    }

    #[test]
    fn property_case_never_changes_the_result() {
        for s in arbitrary_strings(50_000) {
            let upper = s.to_uppercase();
            if let (Ok(a), Ok(b)) = (normalize(&s), normalize(&upper)) {
                // Uppercasing can create new characters (e.g. U+00DF -> "SS"); compare only where it
                // round-trips through lowercase.
                if upper.to_lowercase() == s.to_lowercase() {
                    assert_eq!(a, b, "{s:?} vs {upper:?}");
                }
            }
        }
    }
}
