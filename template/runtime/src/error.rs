//! The one error type that readiness checks, resource closers and startup work return.

/// Any error: the app's own types, `anyhow::Error`, or a plain `String`, all convert into it.
pub type Error = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The error and its sources, outermost first, joined the way `anyhow` prints `{:#}`.
pub(crate) fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Wrappers that repeat their source's message add nothing.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("connecting to the broker")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn sources_are_told_in_order() {
        let error: Error = Outer(std::io::Error::other("connection refused")).into();
        assert_eq!(
            describe(error.as_ref()),
            "connecting to the broker: connection refused"
        );
        let plain: Error = "not checked yet".into();
        assert_eq!(describe(plain.as_ref()), "not checked yet");
    }
}
