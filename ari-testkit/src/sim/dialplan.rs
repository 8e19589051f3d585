//! A tiny extensions.conf parser and matcher: enough dialplan for Local channels to behave
//! like the contexts Asterisk's test suite and the recorded fixtures use.

use std::collections::BTreeMap;

/// One priority of one extension.
#[derive(Debug, Clone)]
pub(crate) struct Line {
    pub(crate) exten: String,
    pub(crate) prio: i64,
    pub(crate) label: Option<String>,
    pub(crate) app: String,
    pub(crate) data: String,
}

/// Parsed dialplan: context name → lines in file order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Dialplan {
    contexts: BTreeMap<String, Vec<Line>>,
}

impl Dialplan {
    /// Parses extensions.conf text. Unknown syntax is skipped, never an error.
    pub(crate) fn parse(text: &str) -> Dialplan {
        let mut dp = Dialplan::default();
        let mut ctx: Option<String> = None;
        let mut last: Option<(String, i64)> = None;
        for raw in text.lines() {
            // `;` starts a comment unless escaped (`\;`).
            let cut = raw
                .char_indices()
                .find(|&(i, c)| c == ';' && !raw[..i].ends_with('\\'))
                .map(|(i, _)| i);
            let line = match cut {
                Some(i) => &raw[..i],
                None => raw,
            }
            .trim();
            if line.is_empty() {
                continue;
            }
            if line.starts_with('[') {
                if let Some(end) = line.find(']') {
                    let name = line[1..end].trim().to_string();
                    dp.contexts.entry(name.clone()).or_default();
                    ctx = Some(name);
                    last = None;
                }
                continue;
            }
            let Some(c) = ctx.clone() else { continue };
            let (kw, rest) = match line.split_once("=>") {
                Some((k, r)) => (k.trim(), r.trim()),
                None => match line.split_once('=') {
                    Some((k, r)) => (k.trim(), r.trim()),
                    None => continue,
                },
            };
            let (exten, rest) = match kw {
                "exten" => match rest.split_once(',') {
                    Some((e, r)) => (e.trim().to_string(), r),
                    None => continue,
                },
                "same" => match &last {
                    Some((e, _)) => (e.clone(), rest),
                    None => continue,
                },
                _ => continue,
            };
            let Some((prio_s, appspec)) = rest.split_once(',') else {
                continue;
            };
            let prio_s = prio_s.trim();
            let (prio_txt, label) = match prio_s.find('(') {
                Some(i) => (
                    &prio_s[..i],
                    Some(prio_s[i + 1..].trim_end_matches(')').to_string()),
                ),
                None => (prio_s, None),
            };
            let prio = match prio_txt {
                "n" => match &last {
                    Some((e, p)) if *e == exten => p + 1,
                    _ => 1,
                },
                "hint" => continue,
                t => match t.parse::<i64>() {
                    Ok(p) => p,
                    Err(_) => continue,
                },
            };
            let appspec = appspec.trim();
            let (app, data) = match appspec.find('(') {
                Some(i) => {
                    let inner = &appspec[i + 1..];
                    let inner = inner.strip_suffix(')').unwrap_or(inner);
                    (appspec[..i].trim().to_string(), inner.to_string())
                }
                None => match appspec.split_once(',') {
                    Some((a, d)) => (a.trim().to_string(), d.to_string()),
                    None => (appspec.to_string(), String::new()),
                },
            };
            last = Some((exten.clone(), prio));
            if let Some(lines) = dp.contexts.get_mut(&c) {
                lines.push(Line {
                    exten,
                    prio,
                    label,
                    app,
                    data,
                });
            }
        }
        dp
    }

    /// Whether the context exists at all.
    #[cfg(test)]
    pub(crate) fn has_context(&self, ctx: &str) -> bool {
        self.contexts.contains_key(ctx)
    }

    /// The extension pattern (exact first, then `_` patterns) matching `exten` in `ctx`.
    pub(crate) fn resolve_exten(&self, ctx: &str, exten: &str) -> Option<String> {
        let lines = self.contexts.get(ctx)?;
        if lines.iter().any(|l| l.exten == exten) {
            return Some(exten.to_string());
        }
        lines
            .iter()
            .find(|l| l.exten.starts_with('_') && pattern_match(&l.exten[1..], exten))
            .map(|l| l.exten.clone())
    }

    /// The line at (`ctx`, `exten`, `prio`).
    pub(crate) fn find(&self, ctx: &str, exten: &str, prio: i64) -> Option<&Line> {
        let pat = self.resolve_exten(ctx, exten)?;
        self.contexts
            .get(ctx)?
            .iter()
            .find(|l| l.exten == pat && l.prio == prio)
    }

    /// The priority of `label` in (`ctx`, `exten`); a numeric label is a priority.
    pub(crate) fn label(&self, ctx: &str, exten: &str, label: &str) -> Option<i64> {
        let pat = self.resolve_exten(ctx, exten)?;
        let lines = self.contexts.get(ctx)?;
        if let Some(l) = lines
            .iter()
            .find(|l| l.exten == pat && l.label.as_deref() == Some(label))
        {
            return Some(l.prio);
        }
        let p: i64 = label.parse().ok()?;
        lines
            .iter()
            .find(|l| l.exten == pat && l.prio == p)
            .map(|l| l.prio)
    }
}

/// Asterisk extension pattern (without the leading `_`).
fn pattern_match(pat: &str, s: &str) -> bool {
    let p: Vec<char> = pat.chars().collect();
    let c: Vec<char> = s.chars().collect();
    fn go(p: &[char], c: &[char]) -> bool {
        let Some(&first) = p.first() else {
            return c.is_empty();
        };
        match first {
            '.' => !c.is_empty(),
            '!' => true,
            '[' => {
                let Some(end) = p.iter().position(|&x| x == ']') else {
                    return false;
                };
                let Some(&ch) = c.first() else { return false };
                let set = &p[1..end];
                let mut ok = false;
                let mut i = 0;
                while i < set.len() {
                    if i + 2 < set.len() && set[i + 1] == '-' {
                        if set[i] <= ch && ch <= set[i + 2] {
                            ok = true;
                        }
                        i += 3;
                    } else {
                        if set[i] == ch {
                            ok = true;
                        }
                        i += 1;
                    }
                }
                ok && go(&p[end + 1..], &c[1..])
            }
            _ => {
                let Some(&ch) = c.first() else { return false };
                let ok = match first.to_ascii_uppercase() {
                    'X' => ch.is_ascii_digit(),
                    'Z' => ('1'..='9').contains(&ch),
                    'N' => ('2'..='9').contains(&ch),
                    _ => first == ch,
                };
                ok && go(&p[1..], &c[1..])
            }
        }
    }
    go(&p, &c)
}

/// Splits application data on top-level commas (parentheses and `${...}` protect commas).
pub(crate) fn split_args(data: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for ch in data.chars() {
        match ch {
            '(' | '{' | '[' => {
                depth += 1;
                cur.push(ch);
            }
            ')' | '}' | ']' => {
                depth -= 1;
                cur.push(ch);
            }
            ',' if depth <= 0 => out.push(std::mem::take(&mut cur)),
            _ => cur.push(ch),
        }
    }
    out.push(cur);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_priorities_labels_and_patterns() {
        let dp = Dialplan::parse(
            "[ctx]\nexten => s,1,NoOp()\n same => n,Answer()\n same => 3(eggs),Stasis(app,${EXTEN})\nexten => _X.,1,Wait(2)\nexten => 1000,1,Answer\n",
        );
        assert!(dp.has_context("ctx"));
        assert_eq!(
            dp.find("ctx", "s", 2).map(|l| l.app.as_str()),
            Some("Answer")
        );
        let l = dp.find("ctx", "s", 3).expect("line");
        assert_eq!(
            (l.app.as_str(), l.data.as_str()),
            ("Stasis", "app,${EXTEN}")
        );
        assert_eq!(dp.label("ctx", "s", "eggs"), Some(3));
        assert_eq!(
            dp.find("ctx", "1000", 1).map(|l| l.app.as_str()),
            Some("Answer")
        );
        assert_eq!(
            dp.find("ctx", "42", 1).map(|l| l.app.as_str()),
            Some("Wait")
        );
        assert!(dp.find("ctx", "s", 9).is_none());
        assert_eq!(split_args("a,b(c,d),${X}"), vec!["a", "b(c,d)", "${X}"]);
    }
}
