//! Module-supplied text made safe to print: every string a module controls (its descriptor, its
//! refusal of a configuration, its log, the names in its binary) passes through here before it
//! reaches a terminal, a log or an HTTP response.
//!
//! **Invariant**: the result is one line of printable text, at most `max_chars` characters plus
//! an ellipsis. Control characters (C0, DEL, C1: newlines, `ESC` of terminal escape sequences)
//! and invisible formatting characters (bidirectional overrides, zero-width characters) are
//! written as `\u{..}` escapes, so nothing a module writes can move the cursor, recolour the
//! terminal, forge a line of the host's own output or reorder what a reader sees.

use std::fmt::Write as _;

/// Longest module-supplied text kept in a message, in characters.
pub const MESSAGE_CHARS: usize = 200;

/// Whether `c` would change how surrounding text is displayed rather than display itself.
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200B}'..='\u{200F}' // zero-width space/joiners, LRM/RLM
            | '\u{2028}'..='\u{202E}' // line/paragraph separators, bidi embeddings and overrides
            | '\u{2060}'..='\u{206F}' // word joiner, invisible operators, bidi isolates
            | '\u{FEFF}' // zero-width no-break space (BOM)
            | '\u{FFF9}'..='\u{FFFB}' // interlinear annotations
        )
}

/// `text` as one printable line of at most `max_chars` characters (an ellipsis marks a cut).
pub fn sanitize(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars * 2 + 8));
    for (shown, c) in text.chars().enumerate() {
        if shown >= max_chars {
            out.push('…');
            break;
        }
        if is_unsafe_char(c) {
            let _ = match c {
                '\n' => out.write_str("\\n"),
                '\r' => out.write_str("\\r"),
                '\t' => out.write_str("\\t"),
                _ => write!(out, "\\u{{{:x}}}", c as u32),
            };
        } else {
            out.push(c);
        }
    }
    out
}

/// [`sanitize`] with the length used in error messages.
pub fn clean(text: &str) -> String {
    sanitize(text, MESSAGE_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, max: usize, expected: &str) {
        assert_eq!(sanitize(input, max), expected, "{input:?}");
    }

    #[test]
    fn escapes_and_truncates() {
        check("plain text", 100, "plain text");
        check("two\nlines", 100, "two\\nlines");
        check("\x1b[2J\x1b[1;32mOK: forged", 100, "\\u{1b}[2J\\u{1b}[1;32mOK: forged");
        check("tab\there\r", 100, "tab\\there\\r");
        check("bidi \u{202E}txt.exe", 100, "bidi \\u{202e}txt.exe");
        check("c1 \u{9b}31m", 100, "c1 \\u{9b}31m");
        check("µs ≥ 1 × ok", 100, "µs ≥ 1 × ok");
        check("abcdef", 3, "abc…");
        check("", 3, "");
    }

    #[test]
    fn output_is_always_one_printable_line() {
        let nasty: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        let s = sanitize(&nasty, 100_000);
        assert!(!s.chars().any(is_unsafe_char));
        assert_eq!(s.lines().count(), 1);
    }
}
