//! Span fields as a JSON object, written straight into the span's buffer.
//!
//! The JSON log format keeps each span's fields as text and parses it back only when an
//! event inside the span is logged. tracing-subscriber's own `JsonFields` builds a map of
//! `serde_json::Value`s first, a handful of allocations for every span; the `request` span
//! is opened on every request, mostly to log nothing, so this writes the object directly.

use std::{
    error::Error,
    fmt::{self, Write},
};

use tracing::field::{Field, Visit};
use tracing_subscriber::{
    field::RecordFields,
    fmt::{FormatFields, FormattedFields, format::Writer},
};

/// `{"name":value,...}` in the order the fields were declared and recorded.
pub(crate) struct JsonSpanFields;

impl<'writer> FormatFields<'writer> for JsonSpanFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut staged = Staged::new(&mut writer);
        staged.write_char('{')?;
        let mut members = Members::new(&mut staged, true);
        fields.record(&mut members);
        members.result?;
        staged.write_char('}')?;
        staged.flush()
    }

    /// Fields recorded after the span was created (`Span::record`) join the same object.
    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let first = reopen(&mut current.fields);
        let mut members = Members::new(&mut current.fields, first);
        fields.record(&mut members);
        let result = members.result;
        current.fields.push('}');
        result
    }
}

struct Members<'a, W> {
    out: &'a mut W,
    first: bool,
    result: fmt::Result,
}

impl<'a, W: Write> Members<'a, W> {
    fn new(out: &'a mut W, first: bool) -> Self {
        Self {
            out,
            first,
            result: Ok(()),
        }
    }

    fn member(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        let name = name.strip_prefix("r#").unwrap_or(name);
        let first = std::mem::take(&mut self.first);
        self.result = (|| {
            if !first {
                self.out.write_char(',')?;
            }
            write_string(self.out, name)?;
            self.out.write_char(':')?;
            value(self.out)
        })();
    }
}

impl<W: Write> Visit for Members<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field, |out| write_string(out, value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.member(field, |out| write!(out, "{value}"));
    }

    /// JSON has no NaN or infinity; like serde_json, they become `null`.
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.member(field, |out| {
            if value.is_finite() {
                write!(out, "{value}")
            } else {
                out.write_str("null")
            }
        });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn Error + 'static)) {
        self.member(field, |out| write_quoted(out, format_args!("{value}")));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.member(field, |out| write_quoted(out, format_args!("{value:?}")));
    }
}

/// Opens a span's object again for more members, without its closing brace (an object that
/// is not one is started afresh); true if it has no members yet.
fn reopen(object: &mut String) -> bool {
    if object.pop() != Some('}') {
        object.clear();
        object.push('{');
    }
    object == "{"
}

/// Adds string members to a span's object, as `add_fields` adds recorded ones.
pub(crate) fn append_strings<'name, 'value>(
    object: &mut String,
    members: impl IntoIterator<Item = (&'name str, &'value str)>,
) {
    let mut first = reopen(object);
    for (name, value) in members {
        if !std::mem::take(&mut first) {
            object.push(',');
        }
        // Writing to a String cannot fail.
        let _ = write_string(object, name);
        object.push(':');
        let _ = write_string(object, value);
    }
    object.push('}');
}

fn write_string(out: &mut impl Write, text: &str) -> fmt::Result {
    out.write_char('"')?;
    Escaped(out).write_str(text)?;
    out.write_char('"')
}

fn write_quoted(out: &mut impl Write, text: fmt::Arguments<'_>) -> fmt::Result {
    out.write_char('"')?;
    Escaped(out).write_fmt(text)?;
    out.write_char('"')
}

/// Escapes what JSON strings cannot hold as is: quotes, backslashes, control characters.
struct Escaped<'a, W>(&'a mut W);

impl<W: Write> Write for Escaped<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let needs_escape = |byte: u8| byte < 0x20 || byte == b'"' || byte == b'\\';
        // Folded rather than searched: no early exit, so the check is vectorised.
        if !text
            .bytes()
            .fold(false, |seen, byte| seen | needs_escape(byte))
        {
            return self.0.write_str(text);
        }
        let mut plain_from = 0;
        for (at, byte) in text.bytes().enumerate() {
            if !needs_escape(byte) {
                continue;
            }
            self.0.write_str(&text[plain_from..at])?;
            match byte {
                b'"' => self.0.write_str("\\\""),
                b'\\' => self.0.write_str("\\\\"),
                b'\n' => self.0.write_str("\\n"),
                b'\r' => self.0.write_str("\\r"),
                b'\t' => self.0.write_str("\\t"),
                _ => write!(self.0, "\\u{byte:04x}"),
            }?;
            plain_from = at + 1;
        }
        self.0.write_str(&text[plain_from..])
    }
}

/// Collects a span's object on the stack, so that the span's own string is allocated once
/// rather than grown piece by piece.
struct Staged<'a> {
    out: &'a mut dyn Write,
    bytes: [u8; 256],
    len: usize,
}

impl<'a> Staged<'a> {
    fn new(out: &'a mut dyn Write) -> Self {
        Self {
            out,
            bytes: [0; 256],
            len: 0,
        }
    }

    fn flush(&mut self) -> fmt::Result {
        let staged = std::str::from_utf8(&self.bytes[..self.len])
            .expect("only whole strings are staged, so the bytes are UTF-8");
        self.len = 0;
        self.out.write_str(staged)
    }
}

impl Write for Staged<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        if self.len + text.len() > self.bytes.len() {
            self.flush()?;
            if text.len() > self.bytes.len() {
                return self.out.write_str(text);
            }
        }
        self.bytes[self.len..self.len + text.len()].copy_from_slice(text.as_bytes());
        self.len += text.len();
        Ok(())
    }

    /// The separators and quotes: one byte each, no copy call.
    fn write_char(&mut self, char: char) -> fmt::Result {
        if !char.is_ascii() {
            return self.write_str(char.encode_utf8(&mut [0; 4]));
        }
        if self.len == self.bytes.len() {
            self.flush()?;
        }
        self.bytes[self.len] = char as u8;
        self.len += 1;
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::{
        io,
        sync::{Arc, Mutex},
    };

    use serde_json::{Value, json};
    use tracing_subscriber::{fmt::MakeWriter, layer::SubscriberExt};

    use super::*;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Lines;

        fn make_writer(&'a self) -> Lines {
            self.clone()
        }
    }

    /// The JSON lines that `log` produces, as the service's log layers write them.
    pub(in crate::telemetry) fn logged_lines(log: impl FnOnce()) -> Vec<Value> {
        let lines = Lines::default();
        let layer = tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .fmt_fields(JsonSpanFields)
            .with_writer(lines.clone());
        let subscriber = tracing_subscriber::registry()
            .with(super::super::request_fields::WriteDeferred)
            .with(layer);
        tracing::subscriber::with_default(subscriber, log);
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|error| {
                    panic!("not a JSON line ({error}): {line}");
                })
            })
            .collect()
    }

    /// The `span` object of the one JSON line that `log` produces.
    fn logged_span(log: impl FnOnce()) -> Value {
        let lines = logged_lines(log);
        assert_eq!(lines.len(), 1, "{lines:?}");
        lines[0]["span"].clone()
    }

    #[test]
    fn values_of_every_kind_survive_the_round_trip() {
        let tricky = "quote \" backslash \\ newline \n tab \t bell \u{7} é ✓";
        let span = logged_span(|| {
            let error = io::Error::other("disk \"full\"");
            let span = tracing::info_span!(
                "request",
                text = tricky,
                count = 3_u64,
                delta = -2_i64,
                ratio = 0.5_f64,
                nan = f64::NAN,
                flag = true,
                debug = ?("a", 1),
                error = &error as &(dyn Error + 'static),
                r#type = "raw",
            );
            span.in_scope(|| tracing::info!("inside"));
        });
        assert_eq!(
            span,
            json!({
                "name": "request",
                "text": tricky,
                "count": 3,
                "delta": -2,
                "ratio": 0.5,
                "nan": null,
                "flag": true,
                "debug": "(\"a\", 1)",
                "error": "disk \"full\"",
                "type": "raw",
            })
        );
    }

    #[test]
    fn values_longer_than_the_stage_are_whole() {
        let long = "x".repeat(300);
        let quoted = "\"q\" ".repeat(100);
        let span = logged_span(|| {
            let span = tracing::info_span!("request", short = "s", long = %long, quoted = %quoted);
            span.in_scope(|| tracing::info!("inside"));
        });
        assert_eq!(
            span,
            json!({"name": "request", "short": "s", "long": long, "quoted": quoted})
        );
    }

    #[test]
    fn fields_recorded_later_join_the_object() {
        let span = logged_span(|| {
            let span = tracing::info_span!(
                "request",
                route = "/",
                late = tracing::field::Empty,
                later = tracing::field::Empty,
            );
            span.record("late", "one");
            span.record("later", 2);
            span.in_scope(|| tracing::info!("inside"));
        });
        assert_eq!(
            span,
            json!({"name": "request", "route": "/", "late": "one", "later": 2})
        );
    }

    #[test]
    fn a_field_recorded_into_an_empty_span_needs_no_comma() {
        let span = logged_span(|| {
            let span = tracing::info_span!("quiet", late = tracing::field::Empty);
            span.record("late", "now");
            span.in_scope(|| tracing::info!("inside"));
        });
        assert_eq!(span, json!({"name": "quiet", "late": "now"}));
    }
}
