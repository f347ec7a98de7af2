//! `~` and `${VAR}` expansion in `command`, `shell`, `cwd`, `env` and exec probes.
//!
//! Expansion runs on parsed strings, never on the raw file, so a value can never
//! change the TOML structure around it. Only `${NAME}` is expanded: a bare `$NAME`,
//! `$1` or `$$` is left alone because `shell` strings hand those to `/bin/sh`, which
//! expands them itself at run time. `$${` writes a literal `${`. A leading `~` (`~` or
//! `~/…`) becomes `$HOME`; `~user` is left alone.

/// Looks a variable up; `None` when unset (or not valid UTF-8).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The real process environment, for [`super::load`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var_os(name).and_then(|v| v.into_string().ok())
}

/// Expands a leading `~` and every `${NAME}` in `s`. The error names the variable.
pub fn expand(s: &str, env: EnvLookup<'_>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    if rest == "~" || rest.starts_with("~/") {
        let home = env("HOME")
            .filter(|h| !h.is_empty())
            .ok_or_else(|| "`~` needs the HOME variable, which is not set".to_string())?;
        out.push_str(&home);
        rest = &rest[1..];
    }
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let Some(end) = after.find('}') else {
                return Err(format!(
                    "unclosed `${{` in `{s}` (write `$${{` for a literal `${{`)"
                ));
            };
            let name = &after[..end];
            if !is_var_name(name) {
                return Err(format!(
                    "`${{{name}}}` is not a variable name: only `${{NAME}}` with letters, \
                     digits and `_` is expanded (write `$${{` for a literal `${{`)"
                ));
            }
            let value = env(name).ok_or_else(|| format!("variable `{name}` is not set"))?;
            out.push_str(&value);
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOME" => Some("/home/u".into()),
            "PORT" => Some("3001".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_home_and_braced_variables() {
        let cases = [
            ("~", "/home/u"),
            ("~/x/y", "/home/u/x/y"),
            ("a~/x", "a~/x"),
            ("~user/x", "~user/x"),
            ("--port=${PORT}", "--port=3001"),
            ("${HOME}/${PORT}${PORT}", "/home/u/30013001"),
            ("x${EMPTY}y", "xy"),
            ("echo $HOME $1 $$ $", "echo $HOME $1 $$ $"),
            ("$${PORT}", "${PORT}"),
            ("price: $5", "price: $5"),
            ("", ""),
            ("ünï${PORT}çødé", "ünï3001çødé"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, &env).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn bad_references_name_the_problem() {
        assert!(expand("${NOPE}", &env)
            .unwrap_err()
            .contains("`NOPE` is not set"));
        assert!(expand("${PORT", &env).unwrap_err().contains("unclosed"));
        assert!(expand("${A-B}", &env)
            .unwrap_err()
            .contains("not a variable name"));
        assert!(expand("${}", &env)
            .unwrap_err()
            .contains("not a variable name"));
        assert!(expand("${1}", &env)
            .unwrap_err()
            .contains("not a variable name"));
        let no_home = |_: &str| None;
        assert!(expand("~/x", &no_home).unwrap_err().contains("HOME"));
    }
}
