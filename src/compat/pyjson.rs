//! JSON with Python 3.11 semantics.
//!
//! The reference server is written in Python and applies Python's rules to decoded JSON values:
//! truthiness (`if not ticket`), equality (`==` in filter fields), `float(x)` (order and throttle
//! options), dict-key identity (order and throttle keys) and `json.loads(bytes)` encoding
//! detection. This module reproduces those rules on [`serde_json::Value`] built with the
//! `arbitrary_precision` feature, where a number keeps its JSON text: integers of any size are
//! compared exactly, and a float such as `1e400` behaves like Python's `inf`.
//!
//! Python's `json` turns a number with a fraction or an exponent into a `float` and every other
//! number into an `int`; the private `PyNum` mirrors that split.
//!
//! Nothing here panics, and nothing recurses on the nesting of a value, except serde_json's own
//! parse, clone, serialise and drop, which are bounded by [`MAX_DEPTH`].

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde_json::{Number, Value};

/// The deepest nesting of arrays/objects accepted by [`parse`] and [`parse_bytes`] (a top-level
/// `[]` has depth 1).
///
/// The reference (CPython's `json`, bounded by the interpreter's recursion limit of 1000) accepts
/// roughly 1000 levels; R-FRM-7 requires at least 512. We accept 1000, like the reference.
/// On a 2 MiB thread stack a debug build overflows parsing about 645 nested objects
/// (`{"k":{"k":…}}`, ~3.2 KiB of stack per level; ~840 nested arrays) and cloning about 956 nested
/// objects, so the server's runtime gives its worker threads 8 MiB stacks (`main.rs`), which the
/// test `max_depth_fits_on_the_worker_stack_in_debug` checks for parse, clone, serialise, compare
/// and drop.
///
/// [`parse`] itself runs texts nested deeper than 128 levels on a helper thread with its own
/// stack.
pub const MAX_DEPTH: usize = 1000;

/// The stack of the server's worker threads (see `main.rs`): values up to [`MAX_DEPTH`] fit.
pub const WORKER_STACK: usize = 8 << 20;

/// Texts nested at most this deep are parsed on the caller's stack (serde_json's own default
/// recursion limit); deeper ones on a helper thread with [`DEEP_PARSE_STACK`] bytes of stack.
const INLINE_DEPTH: usize = 128;

/// Stack of the helper thread that parses deep texts (debug: ~1.7 MiB needed at MAX_DEPTH).
const DEEP_PARSE_STACK: usize = 8 << 20;

/// Why a text is not accepted as JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JsonError {
    /// Not valid JSON (syntax, trailing data, leading BOM, invalid UTF-8 in bytes, `NaN`, lone
    /// surrogate escapes, ...). The reference answers these with the R-FRM-2 error reply.
    Invalid,
    /// Nested deeper than [`MAX_DEPTH`] (the reference's parser raises `RecursionError`).
    TooDeep,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonError::Invalid => f.write_str("invalid JSON"),
            JsonError::TooDeep => f.write_str("JSON nested too deeply"),
        }
    }
}

impl std::error::Error for JsonError {}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

/// Parses one JSON document (surrounding JSON whitespace allowed, nothing else around it).
///
/// Nesting deeper than [`MAX_DEPTH`] gives [`JsonError::TooDeep`], unless the text has a syntax
/// error before its first too-deep bracket (e.g. `x[[[[…`, `1 [[[[…`, `["a" [[[[…`), which gives
/// [`JsonError::Invalid`], as Python reports whichever problem it meets first.
/// A leading BOM (U+FEFF) is invalid, as in Python's `json.loads(str)`.
///
/// A text nested deeper than 128 levels is parsed on a short-lived helper thread, so the caller's
/// stack depth does not matter; if that thread cannot be created the text is rejected as
/// [`JsonError::TooDeep`].
pub fn parse(text: &str) -> Result<Value, JsonError> {
    match nesting_depth(text.as_bytes(), MAX_DEPTH) {
        Err(deep_at) => Err(classify_too_deep(text, deep_at)),
        Ok(depth) if depth > INLINE_DEPTH => std::thread::scope(|scope| {
            match std::thread::Builder::new()
                .name("pyjson-deep-parse".to_owned())
                .stack_size(DEEP_PARSE_STACK)
                .spawn_scoped(scope, || parse_unchecked(text))
            {
                Ok(handle) => handle.join().unwrap_or(Err(JsonError::Invalid)),
                Err(_) => Err(JsonError::TooDeep),
            }
        }),
        Ok(_) => parse_unchecked(text),
    }
}

/// serde_json without its recursion limit: the caller has bounded the nesting.
fn parse_unchecked(text: &str) -> Result<Value, JsonError> {
    let mut de = serde_json::Deserializer::from_str(text);
    de.disable_recursion_limit();
    let value = Value::deserialize(&mut de).map_err(|_| JsonError::Invalid)?;
    de.end().map_err(|_| JsonError::Invalid)?;
    Ok(value)
}

/// [`parse`] for bytes that must be UTF-8 (a text frame or a Redis payload). Invalid UTF-8 is
/// [`JsonError::Invalid`]. (Binary WebSocket frames go through [`decode_binary`] first.)
pub fn parse_bytes(b: &[u8]) -> Result<Value, JsonError> {
    match std::str::from_utf8(b) {
        Ok(text) => parse(text),
        Err(_) => Err(JsonError::Invalid),
    }
}

/// The deepest nesting of the brackets of `b` (outside JSON strings), or `Err(i)` where `b[i]` is
/// the first bracket nested deeper than `max`.
///
/// The deepest bracket nesting of a text outside JSON strings (exact for valid JSON).
pub fn nesting(b: &[u8]) -> usize {
    nesting_depth(b, usize::MAX).unwrap_or(usize::MAX)
}

/// A cheap scan, not a validator: it only has to be exact for valid JSON. For invalid JSON the
/// answer does not matter much, since the text is rejected either way.
fn nesting_depth(b: &[u8], max: usize) -> Result<usize, usize> {
    let mut depth = 0usize;
    let mut deepest = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, &c) in b.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_string = false;
            }
        } else {
            match c {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth > deepest {
                        if depth > max {
                            return Err(i);
                        }
                        deepest = depth;
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    Ok(deepest)
}

/// For a text nested deeper than [`MAX_DEPTH`], whose first too-deep bracket is at byte
/// `deep_at`: Python raises `RecursionError` only if the text is valid up to that bracket; a
/// syntax error before it is an ordinary decode error. serde_json's `IgnoredAny` validation is
/// iterative (no recursion, no depth limit) and reports where the first error is.
fn classify_too_deep(text: &str, deep_at: usize) -> JsonError {
    match serde_json::from_str::<serde::de::IgnoredAny>(text) {
        Ok(_) => JsonError::TooDeep,
        // Running out of input happens after the too-deep bracket.
        Err(e) if e.is_eof() => JsonError::TooDeep,
        Err(e) => {
            if error_offset(text, e.line(), e.column()) <= deep_at {
                JsonError::Invalid
            } else {
                JsonError::TooDeep
            }
        }
    }
}

/// The byte offset of serde_json's (1-based line, 1-based byte column) error position.
fn error_offset(text: &str, line: usize, column: usize) -> usize {
    let line_start = if line <= 1 {
        0
    } else {
        text.bytes()
            .enumerate()
            .filter(|&(_, c)| c == b'\n')
            .nth(line - 2)
            .map_or(text.len(), |(i, _)| i + 1)
    };
    (line_start + column).saturating_sub(1)
}

// ---------------------------------------------------------------------------------------------
// Numbers
// ---------------------------------------------------------------------------------------------

/// A JSON number (or bool) as Python's `json` would decode it.
#[derive(Debug, Clone, PartialEq)]
enum PyNum<'a> {
    /// A Python `int`: `neg` is false for zero; `digits` has no leading zeros ("0" for zero).
    Int { neg: bool, digits: Cow<'a, str> },
    /// A Python `float` (may be ±inf for texts like `1e400`).
    Float(f64),
}

/// Splits a JSON number text into its Python value. Texts that are not JSON numbers (only
/// possible through `Number::from_string_unchecked`) are read by Rust's float parser, or NaN.
fn py_num(n: &Number) -> PyNum<'_> {
    let s = n.as_str();
    if let Some(num) = int_text(s) {
        return num;
    }
    PyNum::Float(s.parse::<f64>().unwrap_or(f64::NAN))
}

/// `-?[0-9]+` → canonical Int; anything else → None.
fn int_text(s: &str) -> Option<PyNum<'_>> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    if body.is_empty() || !body.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let trimmed = body.trim_start_matches('0');
    Some(if trimmed.is_empty() {
        PyNum::Int {
            neg: false,
            digits: Cow::Borrowed("0"),
        }
    } else {
        PyNum::Int {
            neg,
            digits: Cow::Borrowed(trimmed),
        }
    })
}

/// The number a scalar stands for in arithmetic comparisons: numbers and booleans
/// (`True == 1`). Other values are not numbers.
fn as_py_num(v: &Value) -> Option<PyNum<'_>> {
    match v {
        Value::Number(n) => Some(py_num(n)),
        Value::Bool(b) => Some(PyNum::Int {
            neg: false,
            digits: Cow::Borrowed(if *b { "1" } else { "0" }),
        }),
        _ => None,
    }
}

/// The exact integer value of an integral finite float, canonical like [`PyNum::Int`].
fn float_to_int(f: f64) -> Option<(bool, String)> {
    if !f.is_finite() || f.fract() != 0.0 {
        return None;
    }
    if f == 0.0 {
        return Some((false, "0".to_owned()));
    }
    // `{:.0}` prints the exact decimal expansion of an integral float.
    Some((f < 0.0, format!("{:.0}", f.abs())))
}

fn num_eq(a: &PyNum<'_>, b: &PyNum<'_>) -> bool {
    match (a, b) {
        (
            PyNum::Int {
                neg: na,
                digits: da,
            },
            PyNum::Int {
                neg: nb,
                digits: db,
            },
        ) => na == nb && da == db,
        (PyNum::Float(x), PyNum::Float(y)) => x == y,
        (PyNum::Int { neg, digits }, PyNum::Float(f))
        | (PyNum::Float(f), PyNum::Int { neg, digits }) => {
            // An f64 has at most 309 integral digits: skip formatting for longer ints.
            if digits.len() > 310 {
                return false;
            }
            match float_to_int(*f) {
                Some((fneg, fdigits)) => *neg == fneg && **digits == *fdigits,
                None => false,
            }
        }
    }
}

fn num_truthy(n: &Number) -> bool {
    match py_num(n) {
        PyNum::Int { digits, .. } => digits != "0",
        // NaN is truthy in Python, as is any non-zero float.
        PyNum::Float(f) => f != 0.0,
    }
}

// ---------------------------------------------------------------------------------------------
// Truthiness and equality
// ---------------------------------------------------------------------------------------------

/// Python `bool(x)` of the decoded value: `None`, `False`, `0`, `0.0`, `-0.0` (also `1e-400`,
/// which Python reads as `0.0`), `""`, `[]` and `{}` are falsy.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => num_truthy(n),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Python `a == b` of the decoded values.
///
/// Numbers compare by exact mathematical value (`1 == 1.0`, `10**30 != 1e30`, huge ints
/// exactly, `1e400 == 2e400` as both are `inf`); `True == 1`, `False == 0`, also inside
/// containers; strings by code points (no normalisation); arrays elementwise; objects as dicts
/// (order-independent); `null` only equals `null`. Iterative: safe at any depth.
pub fn py_eq(a: &Value, b: &Value) -> bool {
    let mut stack: Vec<(&Value, &Value)> = vec![(a, b)];
    while let Some((x, y)) = stack.pop() {
        match (x, y) {
            (Value::Null, Value::Null) => {}
            (Value::String(s), Value::String(t)) => {
                if s != t {
                    return false;
                }
            }
            (Value::Array(xs), Value::Array(ys)) => {
                if xs.len() != ys.len() {
                    return false;
                }
                stack.extend(xs.iter().zip(ys.iter()));
            }
            (Value::Object(xm), Value::Object(ym)) => {
                if xm.len() != ym.len() {
                    return false;
                }
                for (k, xv) in xm {
                    match ym.get(k) {
                        Some(yv) => stack.push((xv, yv)),
                        None => return false,
                    }
                }
            }
            _ => match (as_py_num(x), as_py_num(y)) {
                (Some(p), Some(q)) => {
                    if !num_eq(&p, &q) {
                        return false;
                    }
                }
                _ => return false,
            },
        }
    }
    true
}

// ---------------------------------------------------------------------------------------------
// float()
// ---------------------------------------------------------------------------------------------

/// Python `float(x)` of a decoded value (R-OOO-1, R-THR-1).
///
/// Numbers: ints are rounded to nearest (ties to even); an int too large for a float is `None`
/// (Python raises `OverflowError`); float texts such as `1e400` give `inf` (as Python's `json`
/// does). Booleans give 1.0 / 0.0. Strings go through [`float_from_str`]. `null`, arrays and
/// objects are `None` (`TypeError`).
pub fn py_float(v: &Value) -> Option<f64> {
    match v {
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        Value::String(s) => float_from_str(s),
        Value::Number(n) => match py_num(n) {
            PyNum::Float(f) => Some(f),
            PyNum::Int { neg, digits } => {
                let f = digits.parse::<f64>().ok()?;
                if f.is_infinite() {
                    None
                } else if neg {
                    Some(-f)
                } else {
                    Some(f)
                }
            }
        },
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// Characters Python's `str.isspace()` accepts (the Unicode White_Space property as of the
/// Unicode 14 database of Python 3.11, without U+001C..U+001F, which `float()` keeps as is).
fn is_py_space(c: char) -> bool {
    matches!(
        c,
        '\u{09}'..='\u{0D}'
            | ' '
            | '\u{85}'
            | '\u{A0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200A}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202F}'
            | '\u{205F}'
            | '\u{3000}'
    )
}

/// First code points (digit zero) of the runs of ten decimal digits outside ASCII in the
/// Unicode 14 database of Python 3.11 (`unicodedata.decimal`), sorted.
const DECIMAL_ZEROS: [u32; 65] = [
    0x660, 0x6F0, 0x7C0, 0x966, 0x9E6, 0xA66, 0xAE6, 0xB66, 0xBE6, 0xC66, 0xCE6, 0xD66, 0xDE6,
    0xE50, 0xED0, 0xF20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90, 0x1B50,
    0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0, 0xFF10,
    0x104A0, 0x10D30, 0x11066, 0x110F0, 0x11136, 0x111D0, 0x112F0, 0x11450, 0x114D0, 0x11650,
    0x116C0, 0x11730, 0x118E0, 0x11950, 0x11C50, 0x11D50, 0x11DA0, 0x16A60, 0x16AC0, 0x16B50,
    0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6, 0x1E140, 0x1E2F0, 0x1E950, 0x1FBF0,
];

/// The decimal value of a non-ASCII Unicode decimal digit (`unicodedata.decimal`).
fn unicode_decimal(c: char) -> Option<u8> {
    let cp = c as u32;
    let i = DECIMAL_ZEROS.partition_point(|&z| z <= cp);
    let zero = *DECIMAL_ZEROS.get(i.checked_sub(1)?)?;
    let d = cp - zero;
    if d < 10 { Some(d as u8) } else { None }
}

/// Python `float(s)` for a `str`: `None` where Python raises `ValueError`.
///
/// Follows CPython 3.11 `PyFloat_FromString`: non-ASCII whitespace becomes a space and non-ASCII
/// decimal digits (`"١٢٣"`, `"１２"`) become ASCII digits (any other non-ASCII character is an
/// error); underscores are allowed only between two digits; ASCII whitespace (`\t\n\v\f\r `) is
/// stripped at both ends; the rest must be `[+-]` followed by `inf`, `infinity` or `nan` (any
/// case) or a decimal number (`1`, `1.`, `.5`, `1e3`, `1E+3`; at least one mantissa digit, an
/// exponent needs digits). Overflow gives ±inf, underflow ±0.0, as in Python.
pub fn float_from_str(s: &str) -> Option<f64> {
    // _PyUnicode_TransformDecimalAndSpaceToASCII
    let mut buf: Vec<u8> = Vec::with_capacity(s.len());
    for c in s.chars() {
        if (c as u32) < 127 {
            buf.push(c as u8);
        } else if is_py_space(c) {
            buf.push(b' ');
        } else {
            buf.push(b'0' + unicode_decimal(c)?);
        }
    }
    // _Py_string_to_number_with_underscores: each '_' between two digits, then removed.
    if buf.contains(&b'_') {
        let mut prev = 0u8;
        let mut out = Vec::with_capacity(buf.len());
        for &c in &buf {
            if c == b'_' {
                if !prev.is_ascii_digit() {
                    return None;
                }
            } else {
                if prev == b'_' && !c.is_ascii_digit() {
                    return None;
                }
                out.push(c);
            }
            prev = c;
        }
        if prev == b'_' {
            return None;
        }
        buf = out;
    }
    // float_from_string_inner: strip Py_ISSPACE at both ends.
    let is_space = |c: &u8| matches!(c, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r');
    let start = buf.iter().position(|c| !is_space(c))?;
    let end = buf.iter().rposition(|c| !is_space(c))? + 1;
    let body = &buf[start..end];
    // _PyOS_ascii_strtod / _Py_parse_inf_or_nan: the whole rest must be one number.
    let (neg, unsigned) = match body.first() {
        Some(b'-') => (true, &body[1..]),
        Some(b'+') => (false, &body[1..]),
        _ => (false, body),
    };
    let special =
        if unsigned.eq_ignore_ascii_case(b"inf") || unsigned.eq_ignore_ascii_case(b"infinity") {
            Some(f64::INFINITY)
        } else if unsigned.eq_ignore_ascii_case(b"nan") {
            Some(f64::NAN)
        } else {
            None
        };
    if let Some(f) = special {
        return Some(if neg { -f } else { f });
    }
    if !is_decimal_literal(unsigned) {
        return None;
    }
    // Validated ASCII: Rust's correctly rounded parser gives the same value as David Gay's.
    let text = std::str::from_utf8(unsigned).ok()?;
    let f = text.parse::<f64>().ok()?;
    Some(if neg { -f } else { f })
}

/// `digits? ('.' digits?)? ([eE] [+-]? digits)?` with at least one mantissa digit, nothing else.
fn is_decimal_literal(b: &[u8]) -> bool {
    let mut i = 0;
    let digits_from = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        i
    };
    let int_end = digits_from(i);
    let mut mantissa_digits = int_end - i;
    i = int_end;
    if i < b.len() && b[i] == b'.' {
        let frac_end = digits_from(i + 1);
        mantissa_digits += frac_end - (i + 1);
        i = frac_end;
    }
    if mantissa_digits == 0 {
        return false;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let exp_end = digits_from(i);
        if exp_end == i {
            return false;
        }
        i = exp_end;
    }
    i == b.len()
}

// ---------------------------------------------------------------------------------------------
// Dict keys
// ---------------------------------------------------------------------------------------------

/// The identity of a JSON scalar as a Python dict key: two values give equal `HashKey`s iff
/// Python treats them as the same key (`a == b` for hashable values).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HashKey {
    /// `None`: JSON `null`, and also an absent key (`dict.get` gives `None`).
    Null,
    /// An integral value: ints, bools (`True` is `1`) and integral floats (`1.0`, `-0.0`,
    /// `1e30` as its exact value 1000000000000000019884624838656). Canonical decimal text:
    /// no leading zeros, `-` only for negative values, `"0"` for zero.
    Int(String),
    /// A non-integral float or ±inf, by its IEEE bits (never ±0.0, which are `Int("0")`).
    Float(u64),
    /// A string, by content.
    Str(String),
}

/// The dict-key identity of `v` (R-OOO-2, R-THR-2): absent and `null` are the same key; `1`,
/// `1.0` and `true` are the same key; arrays and objects are unhashable (`None`).
pub fn hash_key(v: Option<&Value>) -> Option<HashKey> {
    let v = match v {
        None | Some(Value::Null) => return Some(HashKey::Null),
        Some(v) => v,
    };
    match v {
        Value::String(s) => Some(HashKey::Str(s.clone())),
        Value::Array(_) | Value::Object(_) => None,
        _ => match as_py_num(v)? {
            PyNum::Int { neg, digits } => Some(HashKey::Int(if neg {
                format!("-{digits}")
            } else {
                digits.into_owned()
            })),
            PyNum::Float(f) => Some(match float_to_int(f) {
                Some((neg, digits)) => {
                    HashKey::Int(if neg { format!("-{digits}") } else { digits })
                }
                None => HashKey::Float(f.to_bits()),
            }),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Binary frames, strings
// ---------------------------------------------------------------------------------------------

/// Decodes a binary WebSocket message as Python's `json.loads(bytes)` does
/// (`json.detect_encoding`, then `bytes.decode(encoding, 'surrogatepass')`):
///
/// * BOM `00 00 FE FF` / `FF FE 00 00` → UTF-32 BE/LE, BOM stripped (checked before UTF-16);
/// * BOM `FE FF` / `FF FE` → UTF-16 BE/LE, BOM stripped;
/// * BOM `EF BB BF` → UTF-8, BOM stripped (`utf-8-sig`);
/// * at least 4 bytes: `00 00 ..` → UTF-32 BE, `00 XX ..` → UTF-16 BE, `XX 00 00 00` →
///   UTF-32 LE, other `XX 00 ..` → UTF-16 LE;
/// * exactly 2 bytes: `00 XX` → UTF-16 BE, `XX 00` → UTF-16 LE;
/// * otherwise UTF-8.
///
/// `None` if the bytes do not decode (truncated code units, invalid UTF-8, code points above
/// U+10FFFF). Unlike Python (`surrogatepass`), lone surrogates are rejected too: a Rust string
/// cannot hold them. A second BOM is kept as U+FEFF (which [`parse`] then rejects, like Python).
pub fn decode_binary(b: &[u8]) -> Option<String> {
    if let Some(rest) = b.strip_prefix(&[0x00, 0x00, 0xFE, 0xFF]) {
        return decode_utf32(rest, true);
    }
    if let Some(rest) = b.strip_prefix(&[0xFF, 0xFE, 0x00, 0x00]) {
        return decode_utf32(rest, false);
    }
    if let Some(rest) = b.strip_prefix(&[0xFE, 0xFF]) {
        return decode_utf16(rest, true);
    }
    if let Some(rest) = b.strip_prefix(&[0xFF, 0xFE]) {
        return decode_utf16(rest, false);
    }
    if let Some(rest) = b.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        return decode_utf8(rest);
    }
    if b.len() >= 4 {
        if b[0] == 0 {
            return if b[1] != 0 {
                decode_utf16(b, true)
            } else {
                decode_utf32(b, true)
            };
        }
        if b[1] == 0 {
            return if b[2] != 0 || b[3] != 0 {
                decode_utf16(b, false)
            } else {
                decode_utf32(b, false)
            };
        }
    } else if b.len() == 2 {
        if b[0] == 0 {
            return decode_utf16(b, true);
        }
        if b[1] == 0 {
            return decode_utf16(b, false);
        }
    }
    decode_utf8(b)
}

fn decode_utf8(b: &[u8]) -> Option<String> {
    std::str::from_utf8(b).ok().map(str::to_owned)
}

fn decode_utf16(b: &[u8], big_endian: bool) -> Option<String> {
    if b.len() % 2 != 0 {
        return None;
    }
    let units = b.chunks_exact(2).map(|u| {
        if big_endian {
            u16::from_be_bytes([u[0], u[1]])
        } else {
            u16::from_le_bytes([u[0], u[1]])
        }
    });
    char::decode_utf16(units)
        .collect::<Result<String, _>>()
        .ok()
}

fn decode_utf32(b: &[u8], big_endian: bool) -> Option<String> {
    if b.len() % 4 != 0 {
        return None;
    }
    b.chunks_exact(4)
        .map(|u| {
            let cp = if big_endian {
                u32::from_be_bytes([u[0], u[1], u[2], u[3]])
            } else {
                u32::from_le_bytes([u[0], u[1], u[2], u[3]])
            };
            char::from_u32(cp)
        })
        .collect()
}

/// The first `n` Unicode code points of `s` (all of `s` if it is shorter), as Python's `s[:n]`.
pub fn truncate_chars(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The number of Unicode code points of `s`, as Python's `len(s)` (e.g. R-FRM-3's 40-character
/// limit on `event`).
pub fn char_len(s: &str) -> usize {
    s.chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values below were produced by Python 3.11.7 (gen/gen.py in the scratch crate
    // /work/scratch/pyjson): json.loads, bool, ==, float, dict membership, json.detect_encoding.
    const TRUTHY: &[(&str, bool)] = &[
        ("null", false),
        ("true", true),
        ("false", false),
        ("0", false),
        ("1", true),
        ("-1", true),
        ("-0", false),
        ("0.0", false),
        ("-0.0", false),
        ("0e0", false),
        ("0E+5", false),
        ("0.000", false),
        ("1e-400", false),
        ("-1e-400", false),
        ("1e400", true),
        ("-1e400", true),
        ("0.1", true),
        ("1e-300", true),
        ("123456789012345678901234567890", true),
        ("-123456789012345678901234567890", true),
        ("10", true),
        ("\"\"", false),
        ("\" \"", true),
        ("\"0\"", true),
        ("\"false\"", true),
        ("[]", false),
        ("[0]", true),
        ("[[]]", true),
        ("{}", false),
        ("{\"\":null}", true),
        ("{\"a\":0}", true),
        ("\"\\u0000\"", true),
        ("5e-324", true),
        ("2.5e-324", true),
        ("2.4e-324", false),
        (
            "100000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
            true,
        ),
        (
            "0.00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
            false,
        ),
        (
            "0.000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000001",
            false,
        ),
    ];
    const EQ_VALUES: &[&str] = &[
        "null",
        "true",
        "false",
        "0",
        "1",
        "-1",
        "-0",
        "0.0",
        "-0.0",
        "1.0",
        "1.5",
        "1e0",
        "10",
        "1e1",
        "1E1",
        "2",
        "0.5",
        "\"1\"",
        "\"a\"",
        "\"A\"",
        "\"\"",
        "[]",
        "{}",
        "[1]",
        "[1.0]",
        "[true]",
        "[1,2]",
        "[2,1]",
        "{\"a\":1}",
        "{\"a\":1.0}",
        "{\"a\":true}",
        "{\"b\":1}",
        "{\"a\":1,\"b\":2}",
        "{\"b\":2,\"a\":1}",
        "{\"a\":[1,{\"b\":false}]}",
        "{\"a\":[1.0,{\"b\":0}]}",
        "{\"a\":[1.0,{\"b\":0.0}]}",
        "{\"a\":[1.0,{\"b\":null}]}",
        "[[[]]]",
        "[[[0]]]",
        "[[[false]]]",
        "9007199254740992",
        "9007199254740993",
        "9007199254740992.0",
        "9007199254740993.0",
        "1e16",
        "10000000000000000",
        "1000000000000000000000000000000",
        "1e30",
        "1000000000000000019884624838656",
        "1000000000000000019884624838657",
        "1e400",
        "2e400",
        "-1e400",
        "10000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        "1e-400",
        "-1e-400",
        "123456789012345678901234567890123456789",
        "123456789012345678901234567890123456789.0",
        "1.23456789012345678901234567890123456789e38",
        "179769313486231570814527423731704356798070567525844996598917476803157260780028538760589558632766878171540458953514382464234321326889464182768467546703537516986049910576551282076245490090389328944075868508455133942304583236903222948165808559332123348274797826204144723168738177180919299881250404026184124858368",
        "1.7976931348623157e308",
        "-9223372036854775808",
        "-9223372036854775808.0",
        "18446744073709551616",
        "18446744073709551616.0",
        "18446744073709551615",
        "0.1",
        "0.10000000000000001",
        "0.1000000000000000055511151231257827",
        "3.0000000000000004",
        "3",
        "\"\\u00e9\"",
        "\"\u{e9}\"",
        "\"e\\u0301\"",
        "{\"a\":1,\"a\":2}",
        "{\"a\":2}",
        "[null]",
        "[[]]",
        "[{}]",
        "{\"x\":{}}",
        "{\"x\":[]}",
    ];
    const EQ_MATRIX: &[&str] = &[
        "1000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        "0100100001010000000000000000000000000000000000000000000000000000000000000000000000",
        "0011001110000000000000000000000000000000000000000000000110000000000000000000000000",
        "0011001110000000000000000000000000000000000000000000000110000000000000000000000000",
        "0100100001010000000000000000000000000000000000000000000000000000000000000000000000",
        "0000010000000000000000000000000000000000000000000000000000000000000000000000000000",
        "0011001110000000000000000000000000000000000000000000000110000000000000000000000000",
        "0011001110000000000000000000000000000000000000000000000110000000000000000000000000",
        "0011001110000000000000000000000000000000000000000000000110000000000000000000000000",
        "0100100001010000000000000000000000000000000000000000000000000000000000000000000000",
        "0000000000100000000000000000000000000000000000000000000000000000000000000000000000",
        "0100100001010000000000000000000000000000000000000000000000000000000000000000000000",
        "0000000000001110000000000000000000000000000000000000000000000000000000000000000000",
        "0000000000001110000000000000000000000000000000000000000000000000000000000000000000",
        "0000000000001110000000000000000000000000000000000000000000000000000000000000000000",
        "0000000000000001000000000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000100000000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000010000000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000001000000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000100000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000010000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000001000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000100000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000011100000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000011100000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000011100000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000010000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000001000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000111000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000111000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000111000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000100000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000011000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000011000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000111000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000111000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000111000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000100000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000010000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000001100000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000001100000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000010110000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000001000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000010110000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000010110000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000001100000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000001100000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000010000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000001100000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000001100000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000010000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000001100000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000001100000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000010000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000001000000000000000000000000000",
        "0011001110000000000000000000000000000000000000000000000110000000000000000000000000",
        "0011001110000000000000000000000000000000000000000000000110000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000001000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000110000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000110000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000001100000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000001100000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000011000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000011000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000000110000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000000110000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000000001000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000000000111000000000000",
        "0000000000000000000000000000000000000000000000000000000000000000000111000000000000",
        "0000000000000000000000000000000000000000000000000000000000000000000111000000000000",
        "0000000000000000000000000000000000000000000000000000000000000000000000100000000000",
        "0000000000000000000000000000000000000000000000000000000000000000000000010000000000",
        "0000000000000000000000000000000000000000000000000000000000000000000000001100000000",
        "0000000000000000000000000000000000000000000000000000000000000000000000001100000000",
        "0000000000000000000000000000000000000000000000000000000000000000000000000010000000",
        "0000000000000000000000000000000000000000000000000000000000000000000000000001100000",
        "0000000000000000000000000000000000000000000000000000000000000000000000000001100000",
        "0000000000000000000000000000000000000000000000000000000000000000000000000000010000",
        "0000000000000000000000000000000000000000000000000000000000000000000000000000001000",
        "0000000000000000000000000000000000000000000000000000000000000000000000000000000100",
        "0000000000000000000000000000000000000000000000000000000000000000000000000000000010",
        "0000000000000000000000000000000000000000000000000000000000000000000000000000000001",
    ];
    const FLOAT_STR: &[(&str, Option<u64>)] = &[
        ("1", Some(0x3ff0000000000000)),
        ("-1", Some(0xbff0000000000000)),
        ("+1", Some(0x3ff0000000000000)),
        ("1.5", Some(0x3ff8000000000000)),
        (".5", Some(0x3fe0000000000000)),
        ("5.", Some(0x4014000000000000)),
        (".", None),
        ("-.5", Some(0xbfe0000000000000)),
        ("+.5e1", Some(0x4014000000000000)),
        ("1e3", Some(0x408f400000000000)),
        ("1E3", Some(0x408f400000000000)),
        ("1e+3", Some(0x408f400000000000)),
        ("1E-3", Some(0x3f50624dd2f1a9fc)),
        ("1e", None),
        ("1e+", None),
        ("1e-", None),
        ("e1", None),
        (".e1", None),
        ("1.e1", Some(0x4024000000000000)),
        ("1.5e", None),
        ("1.5e+10", Some(0x420bf08eb0000000)),
        (" 2 ", Some(0x4000000000000000)),
        ("  2.5  ", Some(0x4004000000000000)),
        ("\u{9}3\u{a}", Some(0x4008000000000000)),
        ("\u{b}4\u{c}", Some(0x4010000000000000)),
        ("\u{d}5\u{d}", Some(0x4014000000000000)),
        ("\u{1c}6", None),
        ("6\u{1f}", None),
        ("\u{85}7\u{a0}", Some(0x401c000000000000)),
        ("\u{2000}8\u{3000}", Some(0x4020000000000000)),
        ("\u{2028} 9 \u{2029}", Some(0x4022000000000000)),
        ("\u{200b}1", None),
        ("\u{180e}1", None),
        ("\u{feff}1", None),
        ("1\u{0}", None),
        ("", None),
        (" ", None),
        ("\u{9}\u{a}", None),
        ("inf", Some(0x7ff0000000000000)),
        ("-inf", Some(0xfff0000000000000)),
        ("+inf", Some(0x7ff0000000000000)),
        ("INF", Some(0x7ff0000000000000)),
        ("Inf", Some(0x7ff0000000000000)),
        ("infinity", Some(0x7ff0000000000000)),
        ("-Infinity", Some(0xfff0000000000000)),
        ("+INFINITY", Some(0x7ff0000000000000)),
        ("infinit", None),
        ("infinityy", None),
        ("in f", None),
        ("nan", Some(0x7ff8000000000000)),
        ("-nan", Some(0xfff8000000000000)),
        ("+nan", Some(0x7ff8000000000000)),
        ("NaN", Some(0x7ff8000000000000)),
        ("NAN", Some(0x7ff8000000000000)),
        ("nan(1)", None),
        ("nanq", None),
        ("snan", None),
        ("-+1", None),
        ("+-1", None),
        ("--1", None),
        ("++1", None),
        ("1_000", Some(0x408f400000000000)),
        ("1__000", None),
        ("_1000", None),
        ("1000_", None),
        ("1_000.000_1", Some(0x408f4000346dc5d6)),
        ("1_.5", None),
        ("1._5", None),
        ("1.5_", None),
        ("1e1_0", Some(0x4202a05f20000000)),
        ("1e_10", None),
        ("1_e10", None),
        ("+_1", None),
        ("-1_0", Some(0xc024000000000000)),
        ("0_0", Some(0x0000000000000000)),
        ("00", Some(0x0000000000000000)),
        ("007", Some(0x401c000000000000)),
        ("0x10", None),
        ("0X10", None),
        ("0o7", None),
        ("0b1", None),
        ("1j", None),
        ("1+1j", None),
        ("1,5", None),
        ("1 5", None),
        ("1.5.5", None),
        ("1e5e5", None),
        ("1e5.5", None),
        ("\u{ff11}\u{ff12}\u{ff13}", Some(0x405ec00000000000)),
        ("\u{661}\u{662}\u{663}", Some(0x405ec00000000000)),
        ("\u{6f1}.\u{6f5}", Some(0x3ff8000000000000)),
        ("\u{ff11}e\u{ff13}", Some(0x408f400000000000)),
        ("\u{1d7cf}\u{1d7d0}", Some(0x4028000000000000)),
        ("1_\u{ff11}", Some(0x4026000000000000)),
        ("\u{2075}", None),
        ("\u{bd}", None),
        ("\u{b2}", None),
        ("\u{216b}", None),
        ("1e400", Some(0x7ff0000000000000)),
        ("-1e400", Some(0xfff0000000000000)),
        ("1e-400", Some(0x0000000000000000)),
        ("-1e-400", Some(0x8000000000000000)),
        ("1e99999999999999999999", Some(0x7ff0000000000000)),
        ("1e-99999999999999999999", Some(0x0000000000000000)),
        ("0e999999999", Some(0x0000000000000000)),
        ("4.9406564584124654e-324", Some(0x0000000000000001)),
        ("2.4703282292062327e-324", Some(0x0000000000000000)),
        ("2.4703282292062328e-324", Some(0x0000000000000001)),
        ("1.7976931348623157e308", Some(0x7fefffffffffffff)),
        ("1.7976931348623158e308", Some(0x7fefffffffffffff)),
        ("1.7976931348623159e308", Some(0x7ff0000000000000)),
        (
            "179769313486231580793728971405303415079934132710037826936173778980444968292764750946649017977587207096330286416692887910946555547851940402630657488671505820681908902000708383676273854845817711531764475730270069855571366959622842914819860834936475292719074168444365510704342711559699508093042880177904174497791",
            Some(0x7fefffffffffffff),
        ),
        (
            "179769313486231580793728971405303415079934132710037826936173778980444968292764750946649017977587207096330286416692887910946555547851940402630657488671505820681908902000708383676273854845817711531764475730270069855571366959622842914819860834936475292719074168444365510704342711559699508093042880177904174497792",
            Some(0x7ff0000000000000),
        ),
        ("0.1", Some(0x3fb999999999999a)),
        ("0.30000000000000004", Some(0x3fd3333333333334)),
        ("123456789012345678901234567890", Some(0x45f8ee90ff6c373e)),
        (
            "1.00000000000000011102230246251565404236316680908203125",
            Some(0x3ff0000000000000),
        ),
        (
            "1.000000000000000111022302462515654042363166809082031251",
            Some(0x3ff0000000000001),
        ),
        ("-0", Some(0x8000000000000000)),
        ("-0.0", Some(0x8000000000000000)),
        ("+0", Some(0x0000000000000000)),
        (
            "0.00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000001",
            Some(0x0000000000000000),
        ),
        (
            "10000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
            Some(0x7ff0000000000000),
        ),
        ("99999999999999999999e-10", Some(0x4202a05f20000000)),
        ("true", None),
        ("None", None),
        ("null", None),
        ("abc", None),
        ("1a", None),
        ("a1", None),
        ("\u{a0}\u{a0}", None),
        ("\u{3000}-\u{3000}1", None),
    ];
    const PY_FLOAT: &[(&str, Option<u64>)] = &[
        ("1", Some(0x3ff0000000000000)),
        ("-1", Some(0xbff0000000000000)),
        ("0", Some(0x0000000000000000)),
        ("-0", Some(0x0000000000000000)),
        ("1.5", Some(0x3ff8000000000000)),
        ("1e400", Some(0x7ff0000000000000)),
        ("-1e400", Some(0xfff0000000000000)),
        ("1e-400", Some(0x0000000000000000)),
        ("true", Some(0x3ff0000000000000)),
        ("false", Some(0x0000000000000000)),
        ("null", None),
        ("[]", None),
        ("[1]", None),
        ("{}", None),
        ("{\"a\":1}", None),
        ("\"2\"", Some(0x4000000000000000)),
        ("\" 2.5 \"", Some(0x4004000000000000)),
        ("\"1e3\"", Some(0x408f400000000000)),
        ("\"inf\"", Some(0x7ff0000000000000)),
        ("\"nan\"", Some(0x7ff8000000000000)),
        ("\"1_000\"", Some(0x408f400000000000)),
        ("\"invalid\"", None),
        ("\"\"", None),
        ("\"\\u0661\"", Some(0x3ff0000000000000)),
        ("9007199254740993", Some(0x4340000000000000)),
        (
            "100000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
            Some(0x7fe1ccf385ebc8a0),
        ),
        (
            "1000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
            None,
        ),
        (
            "-1000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
            None,
        ),
        (
            "179769313486231580793728971405303415079934132710037826936173778980444968292764750946649017977587207096330286416692887910946555547851940402630657488671505820681908902000708383676273854845817711531764475730270069855571366959622842914819860834936475292719074168444365510704342711559699508093042880177904174497791",
            Some(0x7fefffffffffffff),
        ),
        (
            "179769313486231580793728971405303415079934132710037826936173778980444968292764750946649017977587207096330286416692887910946555547851940402630657488671505820681908902000708383676273854845817711531764475730270069855571366959622842914819860834936475292719074168444365510704342711559699508093042880177904174497792",
            None,
        ),
        ("\"1e400\"", Some(0x7ff0000000000000)),
        ("\"-0\"", Some(0x8000000000000000)),
        ("-0.0", Some(0x8000000000000000)),
        ("2.5e-324", Some(0x0000000000000001)),
    ];
    const HASH_VALUES: &[&str] = &[
        "null",
        "true",
        "false",
        "0",
        "1",
        "-1",
        "-0",
        "0.0",
        "-0.0",
        "1.0",
        "1.5",
        "-1.5",
        "1e0",
        "2",
        "2.0",
        "\"1\"",
        "\"a\"",
        "\"\"",
        "\"0\"",
        "\"null\"",
        "\"true\"",
        "9007199254740992",
        "9007199254740993",
        "9007199254740992.0",
        "9007199254740993.0",
        "1e30",
        "1000000000000000019884624838656",
        "1000000000000000000000000000000",
        "1e400",
        "2e400",
        "-1e400",
        "10000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        "1e-400",
        "0.1",
        "0.10000000000000001",
        "0.2",
        "[]",
        "[1]",
        "{}",
        "{\"a\":1}",
        "18446744073709551616",
        "18446744073709551616.0",
        "-18446744073709551616",
        "-1.8446744073709552e19",
    ];
    const HASH_GROUPS: &[i32] = &[
        0, 1, 2, 2, 1, 5, 2, 2, 2, 1, 10, 11, 1, 13, 13, 15, 16, 17, 18, 19, 20, 21, 22, 21, 21,
        25, 25, 27, 28, 28, 30, 31, 2, 33, 33, 35, -1, -1, -1, -1, 40, 40, 42, 42,
    ];
    const DECODE: &[(&[u8], Option<&str>)] = &[
        (b"\x7b\x22\x65\x76\x65\x6e\x74\x22\x3a\x22\x70\x69\x6e\x67\x22\x7d", Some("{\"event\":\"ping\"}")),
        (b"\xef\xbb\xbf\x7b\x22\x65\x76\x65\x6e\x74\x22\x3a\x22\x70\x69\x6e\x67\x22\x7d", Some("{\"event\":\"ping\"}")),
        (b"\x7b\x00\x22\x00\x65\x00\x76\x00\x65\x00\x6e\x00\x74\x00\x22\x00\x3a\x00\x22\x00\x70\x00\x69\x00\x6e\x00\x67\x00\x22\x00\x7d\x00", Some("{\"event\":\"ping\"}")),
        (b"\x00\x7b\x00\x22\x00\x65\x00\x76\x00\x65\x00\x6e\x00\x74\x00\x22\x00\x3a\x00\x22\x00\x70\x00\x69\x00\x6e\x00\x67\x00\x22\x00\x7d", Some("{\"event\":\"ping\"}")),
        (b"\xff\xfe\x7b\x00\x22\x00\x65\x00\x76\x00\x65\x00\x6e\x00\x74\x00\x22\x00\x3a\x00\x22\x00\x70\x00\x69\x00\x6e\x00\x67\x00\x22\x00\x7d\x00", Some("{\"event\":\"ping\"}")),
        (b"\x7b\x00\x00\x00\x22\x00\x00\x00\x65\x00\x00\x00\x76\x00\x00\x00\x65\x00\x00\x00\x6e\x00\x00\x00\x74\x00\x00\x00\x22\x00\x00\x00\x3a\x00\x00\x00\x22\x00\x00\x00\x70\x00\x00\x00\x69\x00\x00\x00\x6e\x00\x00\x00\x67\x00\x00\x00\x22\x00\x00\x00\x7d\x00\x00\x00", Some("{\"event\":\"ping\"}")),
        (b"\x00\x00\x00\x7b\x00\x00\x00\x22\x00\x00\x00\x65\x00\x00\x00\x76\x00\x00\x00\x65\x00\x00\x00\x6e\x00\x00\x00\x74\x00\x00\x00\x22\x00\x00\x00\x3a\x00\x00\x00\x22\x00\x00\x00\x70\x00\x00\x00\x69\x00\x00\x00\x6e\x00\x00\x00\x67\x00\x00\x00\x22\x00\x00\x00\x7d", Some("{\"event\":\"ping\"}")),
        (b"\xff\xfe\x00\x00\x7b\x00\x00\x00\x22\x00\x00\x00\x65\x00\x00\x00\x76\x00\x00\x00\x65\x00\x00\x00\x6e\x00\x00\x00\x74\x00\x00\x00\x22\x00\x00\x00\x3a\x00\x00\x00\x22\x00\x00\x00\x70\x00\x00\x00\x69\x00\x00\x00\x6e\x00\x00\x00\x67\x00\x00\x00\x22\x00\x00\x00\x7d\x00\x00\x00", Some("{\"event\":\"ping\"}")),
        (b"\xfe\xff\x00\x7b\x00\x22\x00\x65\x00\x76\x00\x65\x00\x6e\x00\x74\x00\x22\x00\x3a\x00\x22\x00\x70\x00\x69\x00\x6e\x00\x67\x00\x22\x00\x7d", Some("{\"event\":\"ping\"}")),
        (b"\x00\x00\xfe\xff\x00\x00\x00\x7b\x00\x00\x00\x22\x00\x00\x00\x65\x00\x00\x00\x76\x00\x00\x00\x65\x00\x00\x00\x6e\x00\x00\x00\x74\x00\x00\x00\x22\x00\x00\x00\x3a\x00\x00\x00\x22\x00\x00\x00\x70\x00\x00\x00\x69\x00\x00\x00\x6e\x00\x00\x00\x67\x00\x00\x00\x22\x00\x00\x00\x7d", Some("{\"event\":\"ping\"}")),
        (b"\x7b\x22\x65\x76\x65\x6e\x74\x22\x3a\x22\x70\x69\x6e\x67\x22\x2c\x22\x64\x61\x74\x61\x22\x3a\x22\x68\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\x22\x7d", Some("{\"event\":\"ping\",\"data\":\"h\u{e9}\u{20ac}\u{1f600}\"}")),
        (b"\xef\xbb\xbf\x7b\x22\x65\x76\x65\x6e\x74\x22\x3a\x22\x70\x69\x6e\x67\x22\x2c\x22\x64\x61\x74\x61\x22\x3a\x22\x68\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\x22\x7d", Some("{\"event\":\"ping\",\"data\":\"h\u{e9}\u{20ac}\u{1f600}\"}")),
        (b"\x7b\x00\x22\x00\x65\x00\x76\x00\x65\x00\x6e\x00\x74\x00\x22\x00\x3a\x00\x22\x00\x70\x00\x69\x00\x6e\x00\x67\x00\x22\x00\x2c\x00\x22\x00\x64\x00\x61\x00\x74\x00\x61\x00\x22\x00\x3a\x00\x22\x00\x68\x00\xe9\x00\xac\x20\x3d\xd8\x00\xde\x22\x00\x7d\x00", Some("{\"event\":\"ping\",\"data\":\"h\u{e9}\u{20ac}\u{1f600}\"}")),
        (b"\x00\x7b\x00\x22\x00\x65\x00\x76\x00\x65\x00\x6e\x00\x74\x00\x22\x00\x3a\x00\x22\x00\x70\x00\x69\x00\x6e\x00\x67\x00\x22\x00\x2c\x00\x22\x00\x64\x00\x61\x00\x74\x00\x61\x00\x22\x00\x3a\x00\x22\x00\x68\x00\xe9\x20\xac\xd8\x3d\xde\x00\x00\x22\x00\x7d", Some("{\"event\":\"ping\",\"data\":\"h\u{e9}\u{20ac}\u{1f600}\"}")),
        (b"\xff\xfe\x7b\x00\x22\x00\x65\x00\x76\x00\x65\x00\x6e\x00\x74\x00\x22\x00\x3a\x00\x22\x00\x70\x00\x69\x00\x6e\x00\x67\x00\x22\x00\x2c\x00\x22\x00\x64\x00\x61\x00\x74\x00\x61\x00\x22\x00\x3a\x00\x22\x00\x68\x00\xe9\x00\xac\x20\x3d\xd8\x00\xde\x22\x00\x7d\x00", Some("{\"event\":\"ping\",\"data\":\"h\u{e9}\u{20ac}\u{1f600}\"}")),
        (b"\x7b\x00\x00\x00\x22\x00\x00\x00\x65\x00\x00\x00\x76\x00\x00\x00\x65\x00\x00\x00\x6e\x00\x00\x00\x74\x00\x00\x00\x22\x00\x00\x00\x3a\x00\x00\x00\x22\x00\x00\x00\x70\x00\x00\x00\x69\x00\x00\x00\x6e\x00\x00\x00\x67\x00\x00\x00\x22\x00\x00\x00\x2c\x00\x00\x00\x22\x00\x00\x00\x64\x00\x00\x00\x61\x00\x00\x00\x74\x00\x00\x00\x61\x00\x00\x00\x22\x00\x00\x00\x3a\x00\x00\x00\x22\x00\x00\x00\x68\x00\x00\x00\xe9\x00\x00\x00\xac\x20\x00\x00\x00\xf6\x01\x00\x22\x00\x00\x00\x7d\x00\x00\x00", Some("{\"event\":\"ping\",\"data\":\"h\u{e9}\u{20ac}\u{1f600}\"}")),
        (b"\x00\x00\x00\x7b\x00\x00\x00\x22\x00\x00\x00\x65\x00\x00\x00\x76\x00\x00\x00\x65\x00\x00\x00\x6e\x00\x00\x00\x74\x00\x00\x00\x22\x00\x00\x00\x3a\x00\x00\x00\x22\x00\x00\x00\x70\x00\x00\x00\x69\x00\x00\x00\x6e\x00\x00\x00\x67\x00\x00\x00\x22\x00\x00\x00\x2c\x00\x00\x00\x22\x00\x00\x00\x64\x00\x00\x00\x61\x00\x00\x00\x74\x00\x00\x00\x61\x00\x00\x00\x22\x00\x00\x00\x3a\x00\x00\x00\x22\x00\x00\x00\x68\x00\x00\x00\xe9\x00\x00\x20\xac\x00\x01\xf6\x00\x00\x00\x00\x22\x00\x00\x00\x7d", Some("{\"event\":\"ping\",\"data\":\"h\u{e9}\u{20ac}\u{1f600}\"}")),
        (b"\xff\xfe\x00\x00\x7b\x00\x00\x00\x22\x00\x00\x00\x65\x00\x00\x00\x76\x00\x00\x00\x65\x00\x00\x00\x6e\x00\x00\x00\x74\x00\x00\x00\x22\x00\x00\x00\x3a\x00\x00\x00\x22\x00\x00\x00\x70\x00\x00\x00\x69\x00\x00\x00\x6e\x00\x00\x00\x67\x00\x00\x00\x22\x00\x00\x00\x2c\x00\x00\x00\x22\x00\x00\x00\x64\x00\x00\x00\x61\x00\x00\x00\x74\x00\x00\x00\x61\x00\x00\x00\x22\x00\x00\x00\x3a\x00\x00\x00\x22\x00\x00\x00\x68\x00\x00\x00\xe9\x00\x00\x00\xac\x20\x00\x00\x00\xf6\x01\x00\x22\x00\x00\x00\x7d\x00\x00\x00", Some("{\"event\":\"ping\",\"data\":\"h\u{e9}\u{20ac}\u{1f600}\"}")),
        (b"\xfe\xff\x00\x7b\x00\x22\x00\x65\x00\x76\x00\x65\x00\x6e\x00\x74\x00\x22\x00\x3a\x00\x22\x00\x70\x00\x69\x00\x6e\x00\x67\x00\x22\x00\x2c\x00\x22\x00\x64\x00\x61\x00\x74\x00\x61\x00\x22\x00\x3a\x00\x22\x00\x68\x00\xe9\x20\xac\xd8\x3d\xde\x00\x00\x22\x00\x7d", Some("{\"event\":\"ping\",\"data\":\"h\u{e9}\u{20ac}\u{1f600}\"}")),
        (b"\x00\x00\xfe\xff\x00\x00\x00\x7b\x00\x00\x00\x22\x00\x00\x00\x65\x00\x00\x00\x76\x00\x00\x00\x65\x00\x00\x00\x6e\x00\x00\x00\x74\x00\x00\x00\x22\x00\x00\x00\x3a\x00\x00\x00\x22\x00\x00\x00\x70\x00\x00\x00\x69\x00\x00\x00\x6e\x00\x00\x00\x67\x00\x00\x00\x22\x00\x00\x00\x2c\x00\x00\x00\x22\x00\x00\x00\x64\x00\x00\x00\x61\x00\x00\x00\x74\x00\x00\x00\x61\x00\x00\x00\x22\x00\x00\x00\x3a\x00\x00\x00\x22\x00\x00\x00\x68\x00\x00\x00\xe9\x00\x00\x20\xac\x00\x01\xf6\x00\x00\x00\x00\x22\x00\x00\x00\x7d", Some("{\"event\":\"ping\",\"data\":\"h\u{e9}\u{20ac}\u{1f600}\"}")),
        (b"\x5b\x5d", Some("[]")),
        (b"\xef\xbb\xbf\x5b\x5d", Some("[]")),
        (b"\x5b\x00\x5d\x00", Some("[]")),
        (b"\x00\x5b\x00\x5d", Some("[]")),
        (b"\xff\xfe\x5b\x00\x5d\x00", Some("[]")),
        (b"\x5b\x00\x00\x00\x5d\x00\x00\x00", Some("[]")),
        (b"\x00\x00\x00\x5b\x00\x00\x00\x5d", Some("[]")),
        (b"\xff\xfe\x00\x00\x5b\x00\x00\x00\x5d\x00\x00\x00", Some("[]")),
        (b"\xfe\xff\x00\x5b\x00\x5d", Some("[]")),
        (b"\x00\x00\xfe\xff\x00\x00\x00\x5b\x00\x00\x00\x5d", Some("[]")),
        (b"\x31", Some("1")),
        (b"\xef\xbb\xbf\x31", Some("1")),
        (b"\x31\x00", Some("1")),
        (b"\x00\x31", Some("1")),
        (b"\xff\xfe\x31\x00", Some("1")),
        (b"\x31\x00\x00\x00", Some("1")),
        (b"\x00\x00\x00\x31", Some("1")),
        (b"\xff\xfe\x00\x00\x31\x00\x00\x00", Some("1")),
        (b"\xfe\xff\x00\x31", Some("1")),
        (b"\x00\x00\xfe\xff\x00\x00\x00\x31", Some("1")),
        (b"\x31\x32", Some("12")),
        (b"\xef\xbb\xbf\x31\x32", Some("12")),
        (b"\x31\x00\x32\x00", Some("12")),
        (b"\x00\x31\x00\x32", Some("12")),
        (b"\xff\xfe\x31\x00\x32\x00", Some("12")),
        (b"\x31\x00\x00\x00\x32\x00\x00\x00", Some("12")),
        (b"\x00\x00\x00\x31\x00\x00\x00\x32", Some("12")),
        (b"\xff\xfe\x00\x00\x31\x00\x00\x00\x32\x00\x00\x00", Some("12")),
        (b"\xfe\xff\x00\x31\x00\x32", Some("12")),
        (b"\x00\x00\xfe\xff\x00\x00\x00\x31\x00\x00\x00\x32", Some("12")),
        (b"\x22\x78\x22", Some("\"x\"")),
        (b"\xef\xbb\xbf\x22\x78\x22", Some("\"x\"")),
        (b"\x22\x00\x78\x00\x22\x00", Some("\"x\"")),
        (b"\x00\x22\x00\x78\x00\x22", Some("\"x\"")),
        (b"\xff\xfe\x22\x00\x78\x00\x22\x00", Some("\"x\"")),
        (b"\x22\x00\x00\x00\x78\x00\x00\x00\x22\x00\x00\x00", Some("\"x\"")),
        (b"\x00\x00\x00\x22\x00\x00\x00\x78\x00\x00\x00\x22", Some("\"x\"")),
        (b"\xff\xfe\x00\x00\x22\x00\x00\x00\x78\x00\x00\x00\x22\x00\x00\x00", Some("\"x\"")),
        (b"\xfe\xff\x00\x22\x00\x78\x00\x22", Some("\"x\"")),
        (b"\x00\x00\xfe\xff\x00\x00\x00\x22\x00\x00\x00\x78\x00\x00\x00\x22", Some("\"x\"")),
        (b"\x7b\x7d", Some("{}")),
        (b"\xef\xbb\xbf\x7b\x7d", Some("{}")),
        (b"\x7b\x00\x7d\x00", Some("{}")),
        (b"\x00\x7b\x00\x7d", Some("{}")),
        (b"\xff\xfe\x7b\x00\x7d\x00", Some("{}")),
        (b"\x7b\x00\x00\x00\x7d\x00\x00\x00", Some("{}")),
        (b"\x00\x00\x00\x7b\x00\x00\x00\x7d", Some("{}")),
        (b"\xff\xfe\x00\x00\x7b\x00\x00\x00\x7d\x00\x00\x00", Some("{}")),
        (b"\xfe\xff\x00\x7b\x00\x7d", Some("{}")),
        (b"\x00\x00\xfe\xff\x00\x00\x00\x7b\x00\x00\x00\x7d", Some("{}")),
        (b"\xef\xbb\xbf\xef\xbb\xbf\x7b\x7d", Some("\u{feff}{}")),
        (b"\xff\xfe\xff\xfe\x7b\x00\x7d\x00", Some("\u{feff}{}")),
        (b"\xff\xfe\x00\x00\xff\xfe\x00\x00\x7b\x00\x00\x00\x7d\x00\x00\x00", Some("\u{feff}{}")),
        (b"\xfe\xff\xfe\xff\x00\x7b\x00\x7d", Some("\u{feff}{}")),
        (b"\x00\x00\xfe\xff\x00\x00\xfe\xff\x00\x00\x00\x7b\x00\x00\x00\x7d", Some("\u{feff}{}")),
        (b"\x20\x31\x20", Some(" 1 ")),
        (b"\xef\xbb\xbf\x20\x31\x20", Some(" 1 ")),
        (b"\x20\x00\x31\x00\x20\x00", Some(" 1 ")),
        (b"\x00\x20\x00\x31\x00\x20", Some(" 1 ")),
        (b"\xff\xfe\x20\x00\x31\x00\x20\x00", Some(" 1 ")),
        (b"\x20\x00\x00\x00\x31\x00\x00\x00\x20\x00\x00\x00", Some(" 1 ")),
        (b"\x00\x00\x00\x20\x00\x00\x00\x31\x00\x00\x00\x20", Some(" 1 ")),
        (b"\xff\xfe\x00\x00\x20\x00\x00\x00\x31\x00\x00\x00\x20\x00\x00\x00", Some(" 1 ")),
        (b"\xfe\xff\x00\x20\x00\x31\x00\x20", Some(" 1 ")),
        (b"\x00\x00\xfe\xff\x00\x00\x00\x20\x00\x00\x00\x31\x00\x00\x00\x20", Some(" 1 ")),
        (b"", Some("")),
        (b"\xef\xbb\xbf", Some("")),
        (b"\xff\xfe", Some("")),
        (b"\xff\xfe\x00\x00", Some("")),
        (b"\xfe\xff", Some("")),
        (b"\x00\x00\xfe\xff", Some("")),
        (b"\x61", Some("a")),
        (b"\xef\xbb\xbf\x61", Some("a")),
        (b"\x61\x00", Some("a")),
        (b"\x00\x61", Some("a")),
        (b"\xff\xfe\x61\x00", Some("a")),
        (b"\x61\x00\x00\x00", Some("a")),
        (b"\x00\x00\x00\x61", Some("a")),
        (b"\xff\xfe\x00\x00\x61\x00\x00\x00", Some("a")),
        (b"\xfe\xff\x00\x61", Some("a")),
        (b"\x00\x00\xfe\xff\x00\x00\x00\x61", Some("a")),
        (b"\xc3\xa9", Some("\u{e9}")),
        (b"\xef\xbb\xbf\xc3\xa9", Some("\u{e9}")),
        (b"\xe9\x00", Some("\u{e9}")),
        (b"\x00\xe9", Some("\u{e9}")),
        (b"\xff\xfe\xe9\x00", Some("\u{e9}")),
        (b"\xe9\x00\x00\x00", Some("\u{e9}")),
        (b"\x00\x00\x00\xe9", Some("\u{e9}")),
        (b"\xff\xfe\x00\x00\xe9\x00\x00\x00", Some("\u{e9}")),
        (b"\xfe\xff\x00\xe9", Some("\u{e9}")),
        (b"\x00\x00\xfe\xff\x00\x00\x00\xe9", Some("\u{e9}")),
        (b"\x00", Some("\u{0}")),
        (b"\x00\x00", Some("\u{0}")),
        (b"\x61\x00\x00", Some("a\u{0}\u{0}")),
        (b"\x00\x00\x00", Some("\u{0}\u{0}\u{0}")),
        (b"\x00\x00\x00\x00", Some("\u{0}")),
        (b"\xff", None),
        (b"\xfe", None),
        (b"\xef\xbb", None),
        (b"\xff\xfe\x00", None),
        (b"\xff\xfe\x00\x00\x00", None),
        (b"\xff\xfe\x31\x00\x00", None),
        (b"\x31\x00\x00\x00\x31", None),
        (b"\x31\x00\x00\x00\x00", None),
        (b"\x00\x31\x00", Some("\u{0}1\u{0}")),
        (b"\x00\x00\x00\x00\x00\x00\x00\x31", Some("\u{0}1")),
        (b"\x31\x00\x00\x32", Some("1\u{3200}")),
        (b"\x31\x00\x32", Some("1\u{0}2")),
        (b"\x80", None),
        (b"\xc3\x28", None),
        // Python: lone surrogate (decoded with surrogatepass); we reject
        (b"\xed\xa0\x80", None),
        (b"\xf4\x90\x80\x80", None),
        (b"\xc0\x80", None),
        (b"\x61\x62\x63\xff", None),
        (b"\x7b\x22\x61\x22\x3a\x22\xe2\x82\xac\x22\x7d", Some("{\"a\":\"\u{20ac}\"}")),
        (b"\x00\x00\x11\x00", Some("\u{1100}")),
        (b"\x00\x11\x00\x00", Some("\u{11}\u{0}")),
        (b"\xff\xfe\x00\xd8\x00\xdc", Some("\u{10000}")),
        // Python: lone surrogate (decoded with surrogatepass); we reject
        (b"\xff\xfe\x00\xd8", None),
        // Python: lone surrogate (decoded with surrogatepass); we reject
        (b"\xff\xfe\x00\xdc\x00\xd8", None),
        (b"\xfe\xff\xd8\x3d\xde\x00", Some("\u{1f600}")),
        // Python: lone surrogate (decoded with surrogatepass); we reject
        (b"\xff\xfe\x00\x00\x00\xd8\x00\x00", None),
        (b"\xff\xfe\x00\x00\x00\x00\x11\x00", None),
        (b"\x00\x00\x00\x31\x00\x00\x00", None),
        (b"\x31\x00\x00\x00\x32\x00\x00", None),
        (b"\x31\x20\x00\x20", Some("1 \u{0} ")),
        (b"\xef\xbb\xbf\xef\xbb\xbf\x31", Some("\u{feff}1")),
        (b"\xef\xbb\xbf\xff", None),
        // Python: lone surrogate (decoded with surrogatepass); we reject
        (b"\x00\x00\xd8\x00", None),
    ];
    const PARSE_OK: &[(&str, bool)] = &[
        ("{}", true),
        ("[]", true),
        ("1", true),
        ("\"x\"", true),
        ("null", true),
        (" {} ", true),
        ("\u{9}[]\u{a}", true),
        ("\u{feff}{}", false),
        ("{\"a\":1,}", false),
        ("[1,]", false),
        ("{'a':1}", false),
        ("{\"a\" 1}", false),
        ("", false),
        ("  ", false),
        ("01", false),
        ("-", false),
        ("1.", false),
        (".5", false),
        ("1e", false),
        ("-0", true),
        ("1E+2", true),
        ("\"\\ud83d\\ude00\"", true),
        ("\"\\u00e9\"", true),
        ("\"\u{1}\"", false),
        ("\"\u{9}\"", false),
        ("{\"a\":1}{\"b\":2}", false),
        ("[1] [2]", false),
        ("tru", false),
        ("true false", false),
        ("\"abc", false),
        ("\"a\\\"", false),
        ("\"a\\\\\"", true),
        ("{\"a\":[1,2,{\"b\":null}]}", true),
        ("[1,2,3]x", false),
        ("\u{a0}{}", false),
        ("{}\u{a0}", false),
        ("{\"event\":\"ping\"}", true),
        (
            "10000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
            true,
        ),
        ("1e400", true),
    ];

    fn v(text: &str) -> Value {
        parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    fn nested(depth: usize, open: &str, close: &str, leaf: &str) -> String {
        let mut s = String::with_capacity(depth * (open.len() + close.len()) + leaf.len());
        for _ in 0..depth {
            s.push_str(open);
        }
        s.push_str(leaf);
        for _ in 0..depth {
            s.push_str(close);
        }
        s
    }

    #[test]
    fn truthiness_matches_python() {
        for (text, expected) in TRUTHY {
            assert_eq!(truthy(&v(text)), *expected, "{text}");
        }
    }

    #[test]
    fn truthiness_of_built_values() {
        assert!(!truthy(&serde_json::json!(0.0)));
        assert!(!truthy(&serde_json::json!(-0.0)));
        assert!(!truthy(&serde_json::json!(0)));
        assert!(truthy(&serde_json::json!(1e-300)));
        assert!(truthy(&serde_json::json!(u64::MAX)));
        assert!(truthy(&serde_json::json!(i64::MIN)));
        assert!(truthy(&Value::Number(Number::from_string_unchecked(
            "junk".into()
        ))));
    }

    #[test]
    fn equality_matches_python() {
        let values: Vec<Value> = EQ_VALUES.iter().map(|t| v(t)).collect();
        assert_eq!(EQ_MATRIX.len(), values.len());
        for (i, row) in EQ_MATRIX.iter().enumerate() {
            assert_eq!(row.len(), values.len());
            for (j, expected) in row.bytes().enumerate() {
                assert_eq!(
                    py_eq(&values[i], &values[j]),
                    expected == b'1',
                    "{} == {}",
                    EQ_VALUES[i],
                    EQ_VALUES[j]
                );
            }
        }
    }

    #[test]
    fn equality_of_built_values() {
        use serde_json::json;
        assert!(py_eq(&json!(1.0), &json!(1)));
        assert!(py_eq(&json!(true), &json!(1.0)));
        assert!(py_eq(&json!({"a": [1, false]}), &json!({"a": [true, 0.0]})));
        assert!(!py_eq(&json!(null), &json!(0)));
        assert!(!py_eq(&json!("1"), &json!(1)));
        assert!(py_eq(&json!(u64::MAX), &v("18446744073709551615")));
        assert!(py_eq(&json!(i64::MIN), &v("-9223372036854775808.0")));
        assert!(py_eq(&json!(1e300), &json!(1e300)));
        assert!(!py_eq(&json!(1e300), &v(&format!("1{}", "0".repeat(300)))));
        let junk = Value::Number(Number::from_string_unchecked("junk".into()));
        assert!(!py_eq(&junk, &junk));
    }

    fn same_float(got: Option<f64>, expected: Option<u64>) -> bool {
        match (got, expected) {
            (None, None) => true,
            (Some(g), Some(e)) => {
                let e = f64::from_bits(e);
                (g.is_nan() && e.is_nan()) || g.to_bits() == e.to_bits()
            }
            _ => false,
        }
    }

    #[test]
    fn float_from_str_matches_python() {
        assert!(FLOAT_STR.len() >= 60);
        for (s, expected) in FLOAT_STR {
            let got = float_from_str(s);
            assert!(
                same_float(got, *expected),
                "float({s:?}): got {got:?}, expected {:?}",
                expected.map(f64::from_bits)
            );
        }
    }

    #[test]
    fn py_float_matches_python() {
        for (text, expected) in PY_FLOAT {
            let got = py_float(&v(text));
            assert!(
                same_float(got, *expected),
                "float({text}): got {got:?}, expected {:?}",
                expected.map(f64::from_bits)
            );
        }
    }

    #[test]
    fn hash_keys_match_python_dict_identity() {
        let keys: Vec<Option<HashKey>> =
            HASH_VALUES.iter().map(|t| hash_key(Some(&v(t)))).collect();
        assert_eq!(keys.len(), HASH_GROUPS.len());
        for i in 0..keys.len() {
            assert_eq!(keys[i].is_none(), HASH_GROUPS[i] < 0, "{}", HASH_VALUES[i]);
            for j in 0..keys.len() {
                if HASH_GROUPS[i] < 0 || HASH_GROUPS[j] < 0 {
                    continue;
                }
                assert_eq!(
                    keys[i] == keys[j],
                    HASH_GROUPS[i] == HASH_GROUPS[j],
                    "{} vs {}: {:?} {:?}",
                    HASH_VALUES[i],
                    HASH_VALUES[j],
                    keys[i],
                    keys[j]
                );
            }
        }
    }

    #[test]
    fn hash_key_identities() {
        use serde_json::json;
        assert_eq!(hash_key(None), Some(HashKey::Null));
        assert_eq!(hash_key(Some(&json!(null))), Some(HashKey::Null));
        let one = hash_key(Some(&json!(1)));
        assert_eq!(one, Some(HashKey::Int("1".into())));
        assert_eq!(hash_key(Some(&json!(1.0))), one);
        assert_eq!(hash_key(Some(&json!(true))), one);
        let zero = hash_key(Some(&json!(0)));
        assert_eq!(hash_key(Some(&json!(-0.0))), zero);
        assert_eq!(hash_key(Some(&json!(0.0))), zero);
        assert_eq!(hash_key(Some(&json!(false))), zero);
        assert_eq!(hash_key(Some(&v("-0"))), zero);
        assert_eq!(hash_key(Some(&v("-0.0e5"))), zero);
        assert_ne!(hash_key(Some(&json!("1"))), one);
        assert_eq!(
            hash_key(Some(&json!(1.5))),
            Some(HashKey::Float(1.5f64.to_bits()))
        );
        assert_eq!(
            hash_key(Some(&v("15e-1"))),
            Some(HashKey::Float(1.5f64.to_bits()))
        );
        assert_eq!(hash_key(Some(&json!([]))), None);
        assert_eq!(hash_key(Some(&json!({}))), None);
        let huge = format!("-{}", "9".repeat(1000));
        assert_eq!(hash_key(Some(&v(&huge))), Some(HashKey::Int(huge.clone())));
        let padded = Value::Number(Number::from_string_unchecked("-000123".into()));
        assert_eq!(hash_key(Some(&padded)), Some(HashKey::Int("-123".into())));
        let zeros = Value::Number(Number::from_string_unchecked("-000".into()));
        assert_eq!(hash_key(Some(&zeros)), zero);
        // A HashKey works as a HashMap key.
        let mut m = std::collections::HashMap::new();
        m.insert(hash_key(Some(&json!(1))).unwrap(), "a");
        assert_eq!(m.get(&hash_key(Some(&json!(true))).unwrap()), Some(&"a"));
    }

    #[test]
    fn decode_binary_matches_python() {
        for (bytes, expected) in DECODE {
            assert_eq!(decode_binary(bytes).as_deref(), *expected, "{bytes:x?}");
        }
    }

    #[test]
    fn decode_binary_then_parse() {
        let text = r#"{"event":"ping","data":"hé€😀"}"#;
        let expected = v(text);
        let mut encodings: Vec<Vec<u8>> = vec![text.as_bytes().to_vec()];
        let mut sig = vec![0xEF, 0xBB, 0xBF];
        sig.extend_from_slice(text.as_bytes());
        encodings.push(sig);
        let u16s: Vec<u16> = text.encode_utf16().collect();
        for (bom, be) in [(false, false), (false, true), (true, false), (true, true)] {
            let mut b = Vec::new();
            if bom {
                b.extend_from_slice(if be { &[0xFE, 0xFF] } else { &[0xFF, 0xFE] });
            }
            for u in &u16s {
                b.extend_from_slice(&if be { u.to_be_bytes() } else { u.to_le_bytes() });
            }
            encodings.push(b);
            let mut b = Vec::new();
            if bom {
                b.extend_from_slice(if be {
                    &[0, 0, 0xFE, 0xFF]
                } else {
                    &[0xFF, 0xFE, 0, 0]
                });
            }
            for c in text.chars() {
                let c = c as u32;
                b.extend_from_slice(&if be { c.to_be_bytes() } else { c.to_le_bytes() });
            }
            encodings.push(b);
        }
        for b in encodings {
            let decoded = decode_binary(&b).unwrap_or_else(|| panic!("{b:x?}"));
            assert!(py_eq(&parse(&decoded).unwrap(), &expected), "{b:x?}");
            assert_eq!(parse(&decoded).unwrap(), expected);
        }
    }

    #[test]
    fn parse_acceptance_matches_python() {
        for (text, ok) in PARSE_OK {
            assert_eq!(parse(text).is_ok(), *ok, "{text:?}");
            assert_eq!(parse_bytes(text.as_bytes()).is_ok(), *ok, "{text:?}");
        }
    }

    #[test]
    fn parse_details() {
        // Leading BOM is invalid (Python: "Unexpected UTF-8 BOM").
        assert_eq!(parse("\u{feff}{}"), Err(JsonError::Invalid));
        assert_eq!(parse_bytes(b"\xef\xbb\xbf{}"), Err(JsonError::Invalid));
        assert_eq!(parse_bytes(b"\"\xff\""), Err(JsonError::Invalid));
        // Fidelity: integers stay exact, key order kept, duplicates resolve to the last.
        let big = "123456789012345678901234567890123456789";
        assert_eq!(v(big).to_string(), big);
        assert_eq!(v(r#"{"b":1,"a":2,"b":3}"#).to_string(), r#"{"b":3,"a":2}"#);
        assert_eq!(v("1.50").to_string(), "1.50");
        // NaN / Infinity literals and lone surrogates: rejected (allowed by R-FRM-2).
        for t in ["NaN", "Infinity", "-Infinity", r#""\ud800""#] {
            assert_eq!(parse(t), Err(JsonError::Invalid), "{t}");
        }
    }

    #[test]
    fn depth_limit_boundaries() {
        for (open, close) in [("[", "]"), ("{\"k\":", "}"), ("[{\"k\":", "}]")] {
            let per = if open.len() > 5 { 2 } else { 1 };
            let ok = nested(MAX_DEPTH / per, open, close, "1");
            assert!(parse(&ok).is_ok(), "{open}");
            let deep = nested(MAX_DEPTH / per + 1, open, close, "1");
            assert_eq!(parse(&deep), Err(JsonError::TooDeep), "{open}");
            assert_eq!(parse_bytes(deep.as_bytes()), Err(JsonError::TooDeep));
        }
        // Exactly MAX_DEPTH, and MAX_DEPTH + 1, with an empty innermost array.
        assert!(parse(&nested(MAX_DEPTH, "[", "]", "")).is_ok());
        assert_eq!(
            parse(&nested(MAX_DEPTH + 1, "[", "]", "")),
            Err(JsonError::TooDeep)
        );
        // Deep but unterminated: Python raises RecursionError before noticing.
        assert_eq!(parse(&"[".repeat(MAX_DEPTH + 1)), Err(JsonError::TooDeep));
        // Sequential (not nested) brackets do not add up.
        let wide = format!(
            "[{}]",
            vec![nested(MAX_DEPTH - 1, "[", "]", ""); 3].join(",")
        );
        assert!(parse(&wide).is_ok());
        // Brackets inside strings are not counted, escaped quotes do not end strings.
        let s = format!(
            r#"["{}", "\"{}", "\\", {{"a\"[": "]]"}}]"#,
            "[".repeat(5000),
            "{".repeat(5000)
        );
        assert!(parse(&s).is_ok());
        let inner = nested(
            MAX_DEPTH - 1,
            "[",
            "]",
            &format!("\"{}\\\"{}\"", "[".repeat(10), "{".repeat(10)),
        );
        assert!(parse(&format!("[{inner}]")).is_ok());
        assert_eq!(parse(&format!("[[{inner}]]")), Err(JsonError::TooDeep));
        // Invalid before the deep part: an ordinary decode error, as in Python.
        let deep = nested(MAX_DEPTH + 5, "[", "]", "");
        assert_eq!(parse(&format!("x{deep}")), Err(JsonError::Invalid));
        assert_eq!(parse(&format!("1 {deep}")), Err(JsonError::Invalid));
        assert_eq!(parse(&format!("[1 {deep}]")), Err(JsonError::Invalid));
        assert_eq!(parse(&format!("{{\"a\" {deep}}}")), Err(JsonError::Invalid));
        assert_eq!(parse(&format!("[\"x\", {deep}]")), Err(JsonError::TooDeep));
        assert_eq!(parse(&format!("[\"x\" {deep}]")), Err(JsonError::Invalid));
        assert_eq!(
            parse(&format!("[\n\"x\",\n1 {deep}]")),
            Err(JsonError::Invalid)
        );
        assert_eq!(
            parse(&format!("[\n\"x\",\n{deep} 1]")),
            Err(JsonError::TooDeep)
        );
        // Errors after the too-deep point: Python raises RecursionError first.
        assert_eq!(parse(&format!("{deep}x")), Err(JsonError::TooDeep));
        assert_eq!(
            parse(&format!("{}\"abc", "[".repeat(MAX_DEPTH + 1))),
            Err(JsonError::TooDeep)
        );
        // The too-deep bracket itself is the syntax error: Python never enters it.
        let objects = nested(MAX_DEPTH - 1, "{\"k\":", "}", "{\"a\" []}");
        assert_eq!(parse(&objects), Err(JsonError::Invalid));
        let objects = nested(MAX_DEPTH - 1, "{\"k\":", "}", "{\"a\": []}");
        assert_eq!(parse(&objects), Err(JsonError::TooDeep));
        let objects = nested(MAX_DEPTH - 2, "{\"k\":", "}", "{\"a\": []}");
        assert!(parse(&objects).is_ok());
        // ... but a syntax error inside the too-deep value comes later.
        let objects = nested(MAX_DEPTH, "{\"k\":", "}", "{\"a\" []}");
        assert_eq!(parse(&objects), Err(JsonError::TooDeep));
        assert_eq!(
            parse(&format!("{}1 2", "[".repeat(MAX_DEPTH + 1))),
            Err(JsonError::TooDeep)
        );
        // The error offset helper.
        assert_eq!(error_offset("ab\ncd\nef", 1, 2), 1);
        assert_eq!(error_offset("ab\ncd\nef", 2, 1), 3);
        assert_eq!(error_offset("ab\ncd\nef", 3, 2), 7);
        assert_eq!(error_offset("ab", 0, 0), 0);
        assert_eq!(error_offset("ab", 9, 9), 10);
        // A deep text inside a string is fine.
        assert!(parse(&format!("\"{deep}\"")).is_ok());
        assert_eq!(nesting_depth(b"]]]]]]", 0), Ok(0));
        assert_eq!(nesting_depth(b"[[]][[[\"[[[[\"]]]", 3), Ok(3));
        assert_eq!(nesting_depth(b"[[]][[[[\"[[[[\"]]]]", 3), Err(7));
        assert_eq!(nesting_depth(b"{\"a\\\"[\":[[1]]}", 2), Err(9));
    }

    /// MAX_DEPTH must be parseable (even without the helper thread), clonable, serialisable,
    /// comparable and droppable on the server's worker stack in a debug build.
    #[test]
    fn max_depth_fits_on_the_worker_stack_in_debug() {
        let handle = std::thread::Builder::new()
            .stack_size(WORKER_STACK)
            .spawn(|| {
                for (open, close) in [("[", "]"), ("{\"key\":", "}")] {
                    let text = nested(MAX_DEPTH, open, close, "\"leaf\"");
                    // On this thread's stack, as if there were no helper thread.
                    let value = parse_unchecked(&text).expect("parse");
                    let copy = value.clone();
                    let out = serde_json::to_string(&copy).expect("serialise");
                    assert_eq!(out, text);
                    assert_eq!(value.to_string(), text);
                    assert!(py_eq(&value, &copy));
                    assert!(truthy(&value));
                    assert_eq!(hash_key(Some(&value)), None);
                    assert_eq!(py_float(&value), None);
                    let reparsed = parse_bytes(out.as_bytes()).expect("reparse");
                    assert!(py_eq(&reparsed, &value));
                    drop(copy);
                    drop(reparsed);
                    drop(value);
                }
                // Mixed arrays and objects.
                let text = nested(MAX_DEPTH / 2, "[{\"k\":", "}]", "[1,2]");
                let value = parse_unchecked(&text).expect("parse mixed");
                let copy = value.clone();
                assert_eq!(copy.to_string(), text);
                assert!(py_eq(&value, &copy));
            })
            .expect("spawn");
        handle
            .join()
            .expect("a MAX_DEPTH value overflowed the worker stack");
    }

    /// Deep texts are parsed on the helper thread: a caller with little stack left is safe.
    #[test]
    fn deep_parse_does_not_use_the_callers_stack() {
        let handle = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(|| {
                let text = nested(MAX_DEPTH, "{\"k\":", "}", "1");
                let value = parse(&text).expect("parse");
                // Hand the value back: dropping it needs more than this thread's stack.
                (value, parse(&nested(16, "[", "]", "")).is_ok())
            })
            .expect("spawn");
        let (value, shallow_ok) = handle
            .join()
            .expect("deep parse overflowed the caller's stack");
        assert!(shallow_ok);
        assert_eq!(value.to_string().len(), MAX_DEPTH * 6 + 1);
    }

    /// py_eq, truthy, hash_key and py_float do not recurse: any depth is fine.
    #[test]
    fn helpers_do_not_recurse() {
        let mut a = Value::Null;
        let mut b = Value::Bool(false);
        for _ in 0..100_000 {
            a = Value::Array(vec![a]);
            b = Value::Array(vec![b]);
        }
        let handle = std::thread::Builder::new()
            .stack_size(64 << 10)
            .spawn(move || {
                let r = (
                    py_eq(&a, &a),
                    py_eq(&a, &b),
                    truthy(&a),
                    hash_key(Some(&a)),
                    py_float(&a),
                );
                // Dismantle iteratively: the default drop would recurse.
                for mut v in [a, b] {
                    while let Value::Array(mut items) = v {
                        v = items.pop().unwrap_or(Value::Null);
                    }
                }
                r
            })
            .expect("spawn");
        assert_eq!(
            handle.join().expect("recursed"),
            (true, false, true, None, None)
        );
    }

    #[test]
    fn truncate_chars_by_code_points() {
        assert_eq!(truncate_chars("hello", 3), "hel");
        assert_eq!(truncate_chars("hello", 5), "hello");
        assert_eq!(truncate_chars("hello", 50), "hello");
        assert_eq!(truncate_chars("", 3), "");
        assert_eq!(truncate_chars("abc", 0), "");
        assert_eq!(truncate_chars("é😀€x", 2), "é😀");
        assert_eq!(truncate_chars("e\u{301}x", 1), "e");
        let long: String = "😀".repeat(200);
        assert_eq!(truncate_chars(&long, 128).chars().count(), 128);
        assert_eq!(char_len(&long), 200);
        assert_eq!(char_len("é😀"), 2);
    }

    #[test]
    fn unicode_tables() {
        assert_eq!(unicode_decimal('\u{660}'), Some(0));
        assert_eq!(unicode_decimal('\u{669}'), Some(9));
        assert_eq!(unicode_decimal('\u{66A}'), None);
        assert_eq!(unicode_decimal('\u{1FBF9}'), Some(9));
        assert_eq!(unicode_decimal('\u{1D7FF}'), Some(9));
        assert_eq!(unicode_decimal('\u{80}'), None);
        assert_eq!(unicode_decimal('\u{10FFFF}'), None);
        assert!(DECIMAL_ZEROS.windows(2).all(|w| w[0] + 10 <= w[1]));
        assert_eq!(float_from_str("\u{1D7CE}\u{1D7E2}\u{1FBF9}"), Some(9.0));
    }

    /// xorshift64*: deterministic pseudo-random bytes without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn exercise(value: &Value) {
        let _ = truthy(value);
        assert!(py_eq(value, value) || value.to_string().contains("junk"));
        let _ = py_float(value);
        let _ = hash_key(Some(value));
        if let Value::Array(items) = value {
            for pair in items.windows(2) {
                let _ = py_eq(&pair[0], &pair[1]);
                if py_eq(&pair[0], &pair[1]) {
                    if let (Some(a), Some(b)) = (hash_key(Some(&pair[0])), hash_key(Some(&pair[1])))
                    {
                        assert_eq!(a, b, "{} {}", pair[0], pair[1]);
                    }
                }
            }
        }
    }

    #[test]
    fn fuzz_no_panics() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        const TOKENS: &[&str] = &[
            "[",
            "]",
            "{",
            "}",
            ",",
            ":",
            "\"",
            "\\",
            "\"a\"",
            "0",
            "1",
            "-",
            ".",
            "e",
            "E",
            "+",
            "1e400",
            "-0.0",
            "true",
            "false",
            "null",
            " ",
            "\n",
            "\u{feff}",
            "é",
            "\\u0041",
            "\\ud800",
            "99999999999999999999999",
            "1.5",
            "\"1_0\"",
            "\"inf\"",
            "\u{661}",
            "_",
        ];
        for round in 0..20_000 {
            let len = rng.below(40);
            let bytes: Vec<u8> = if round % 2 == 0 {
                (0..len).map(|_| rng.next() as u8).collect()
            } else {
                let mut s = String::new();
                for _ in 0..len {
                    s.push_str(TOKENS[rng.below(TOKENS.len())]);
                }
                s.into_bytes()
            };
            if let Ok(value) = parse_bytes(&bytes) {
                exercise(&value);
            }
            if let Some(text) = decode_binary(&bytes) {
                if let Ok(value) = parse(&text) {
                    exercise(&value);
                }
            }
            let lossy = String::from_utf8_lossy(&bytes);
            let _ = float_from_str(&lossy);
            let _ = truncate_chars(&lossy, rng.below(50));
            let _ = nesting_depth(&bytes, rng.below(5));
            // Random pairs of scalar-ish values: py_eq implies equal hash keys.
            let a = parse(TOKENS[rng.below(TOKENS.len())]);
            let b = parse(TOKENS[rng.below(TOKENS.len())]);
            if let (Ok(a), Ok(b)) = (a, b) {
                if py_eq(&a, &b) {
                    assert_eq!(hash_key(Some(&a)), hash_key(Some(&b)));
                }
                assert_eq!(py_eq(&a, &b), py_eq(&b, &a));
            }
        }
    }

    #[test]
    fn float_from_str_random_agrees_with_rust_on_plain_decimals() {
        // Plain ASCII decimals: our grammar accepts them and the value is Rust's parse.
        let mut rng = Rng(42);
        for _ in 0..5_000 {
            let mut s = String::new();
            if rng.below(2) == 0 {
                s.push('-');
            }
            for _ in 0..1 + rng.below(25) {
                s.push((b'0' + rng.below(10) as u8) as char);
            }
            if rng.below(2) == 0 {
                s.push('.');
                for _ in 0..rng.below(20) {
                    s.push((b'0' + rng.below(10) as u8) as char);
                }
            }
            if rng.below(2) == 0 {
                s.push('e');
                s.push_str(&(rng.below(800) as i64 - 400).to_string());
            }
            let expected: f64 = s.parse().unwrap();
            assert_eq!(
                float_from_str(&s).map(f64::to_bits),
                Some(expected.to_bits()),
                "{s}"
            );
            if let Ok(value) = parse(&s) {
                let is_int = !s.contains(['.', 'e']);
                let want = if is_int && expected.is_infinite() {
                    None
                } else if is_int && expected == 0.0 {
                    Some(0) // Python ints have no negative zero: float(-0) is 0.0
                } else {
                    Some(expected.to_bits())
                };
                assert_eq!(py_float(&value).map(f64::to_bits), want, "{s}");
            }
        }
    }
}
