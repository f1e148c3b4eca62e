//! `${VAR}` / `$VAR` expansion over the raw config text, with Go's `os.Expand` rules exactly
//! (spec/config.md §1.2): configs written for the Go version, e.g. `path: ${LSV_DB_A}`, must
//! expand identically, including its odd corners (`$$` → "", `${` without `}` dropped).

fn is_special(c: u8) -> bool {
    matches!(c, b'*' | b'#' | b'$' | b'@' | b'!' | b'?' | b'-') || c.is_ascii_digit()
}

fn is_name(c: u8) -> bool {
    c == b'_' || c.is_ascii_alphanumeric()
}

/// Go's `getShellName`: the variable name after a `$`, and how many bytes it used.
fn shell_name(s: &str) -> (&str, usize) {
    let b = s.as_bytes();
    if b[0] == b'{' {
        if b.len() > 2 && is_special(b[1]) && b[2] == b'}' {
            return (&s[1..2], 3);
        }
        for i in 1..b.len() {
            if b[i] == b'}' {
                if i == 1 {
                    return ("", 2); // "${}": bad syntax, dropped
                }
                return (&s[1..i], i + 1);
            }
        }
        return ("", 1); // no closing brace: "${" dropped
    }
    if is_special(b[0]) {
        return (&s[0..1], 1);
    }
    let n = b.iter().take_while(|&&c| is_name(c)).count();
    (&s[..n], n)
}

/// Expands `$NAME` and `${NAME}` in `text`; undefined variables become "".
pub fn expand_env(text: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut j = 0;
    while j < b.len() {
        if b[j] == b'$' && j + 1 < b.len() {
            out.push_str(&text[i..j]);
            let (name, w) = shell_name(&text[j + 1..]);
            if name.is_empty() && w > 0 {
                // invalid syntax: eaten
            } else if name.is_empty() {
                out.push('$');
            } else {
                out.push_str(&lookup(name).unwrap_or_default());
            }
            j += w;
            i = j + 1;
        }
        j += 1;
    }
    out.push_str(&text[i.min(b.len())..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "X" => Some("ex".into()),
            "FOO_x" => Some("foox".into()),
            "FOO" => Some("foo".into()),
            _ => None,
        }
    }

    #[test]
    fn go_expand_rules() {
        for (input, want) in [
            ("${X}", "ex"),
            ("$X", "ex"),
            ("a$X/b", "aex/b"),
            ("$FOO_x", "foox"),
            ("${FOO}_x", "foo_x"),
            ("$$", ""),
            ("$1", ""),
            ("$-x", "x"),
            ("${}", ""),
            ("a${b", "ab"),
            ("cost: 5$", "cost: 5$"),
            ("a $% b", "a $% b"),
            ("${UNDEFINED}", ""),
            ("${*}", ""),
            ("${a b}", ""),
            ("plain text", "plain text"),
            ("ünï $X ✓", "ünï ex ✓"),
        ] {
            assert_eq!(expand_env(input, env), want, "{input:?}");
        }
    }
}
