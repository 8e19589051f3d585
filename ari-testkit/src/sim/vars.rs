//! Channel and global variables, `${…}` substitution.

use super::*;

impl Sim {
    pub(super) fn set_chan_var(&mut self, id: &str, var: &str, value: &str) {
        match var {
            "CALLERID(name)" | "CALLERID(num)" | "CALLERID(number)" | "CALLERID(all)" => {
                if let Some(c) = self.channels.by_id.get_mut(id) {
                    match var {
                        "CALLERID(name)" => c.caller.0 = value.to_string(),
                        "CALLERID(all)" => {
                            let (n, num) = parse_callerid(value);
                            c.caller = (n, num);
                        }
                        _ => c.caller.1 = value.to_string(),
                    }
                }
                self.chan_event(
                    "ChannelCallerId",
                    id,
                    json!({"caller_presentation": 0, "caller_presentation_txt": "Presentation Allowed, Not Screened"}),
                );
            }
            "CHANNEL(accountcode)" => {
                if let Some(c) = self.channels.by_id.get_mut(id) {
                    c.accountcode = value.to_string();
                }
            }
            "HOLD_INTERCEPT(set)" | "HOLD_INTERCEPT(remove)" => {
                if let Some(c) = self.channels.by_id.get_mut(id) {
                    c.hold_intercept = var.ends_with("(set)");
                }
            }
            "CONNECTEDLINE(name)"
            | "CONNECTEDLINE(num)"
            | "CONNECTEDLINE(number)"
            | "CONNECTEDLINE(all)" => {
                if let Some(c) = self.channels.by_id.get_mut(id) {
                    match var {
                        "CONNECTEDLINE(name)" => c.connected.0 = value.to_string(),
                        "CONNECTEDLINE(all)" => c.connected = parse_callerid(value),
                        _ => c.connected.1 = value.to_string(),
                    }
                }
                self.chan_event("ChannelConnectedLine", id, json!({}));
            }
            _ => {
                if let Some(g) = var
                    .strip_prefix("GLOBAL(")
                    .and_then(|s| s.strip_suffix(')'))
                {
                    self.system.globals.insert(g.to_string(), value.to_string());
                    self.emit_varset(None, g, value);
                    return;
                }
                if let Some(c) = self.channels.by_id.get_mut(id) {
                    c.vars.insert(var.to_string(), value.to_string());
                }
                self.emit_varset(Some(id), var, value);
            }
        }
    }

    pub(super) fn read_chan_var(&self, c: &Channel, var: &str) -> Option<String> {
        match var {
            "CALLERID(name)" => Some(c.caller.0.clone()),
            "CALLERID(num)" | "CALLERID(number)" => Some(c.caller.1.clone()),
            "CALLERID(all)" => Some(format!("\"{}\" <{}>", c.caller.0, c.caller.1)),
            "CONNECTEDLINE(name)" => Some(c.connected.0.clone()),
            "CONNECTEDLINE(num)" => Some(c.connected.1.clone()),
            "CHANNEL(name)" | "CHANNEL" => Some(c.name.clone()),
            "CHANNEL(language)" => Some(c.language.clone()),
            "CHANNEL(state)" => Some(c.state.to_string()),
            "UNIQUEID" | "CHANNEL(uniqueid)" => Some(c.id.clone()),
            "CHANNEL(linkedid)" => Some(c.linkedid.clone()),
            "CHANNEL(accountcode)" => Some(c.accountcode.clone()),
            "CHANNEL(peeraccount)" => Some(c.peeraccount.clone()),
            "CONNECTEDLINE(all)" => Some(format!("\"{}\" <{}>", c.connected.0, c.connected.1)),
            "EXTEN" => Some(c.exten.clone()),
            "CONTEXT" => Some(c.context.clone()),
            "PRIORITY" => Some(c.priority.to_string()),
            _ => {
                if let Some(g) = var
                    .strip_prefix("GLOBAL(")
                    .and_then(|s| s.strip_suffix(')'))
                {
                    return self.system.globals.get(g).cloned();
                }
                c.vars
                    .get(var)
                    .cloned()
                    .or_else(|| self.system.globals.get(var).cloned())
            }
        }
    }

    /// `${...}` substitution for dialplan application data.
    pub(super) fn substitute(&self, id: &str, data: &str) -> String {
        let Some(c) = self.channels.by_id.get(id) else {
            return data.to_string();
        };
        let mut out = String::new();
        let mut rest = data;
        while let Some(i) = rest.find("${") {
            out.push_str(&rest[..i]);
            let after = &rest[i + 2..];
            let mut depth = 1;
            let mut end = None;
            for (j, ch) in after.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = Some(j);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let Some(end) = end else {
                out.push_str(&rest[i..]);
                return out;
            };
            let name = eval_brackets(&self.substitute(id, &after[..end]));
            let if_val = name
                .strip_prefix("IF(")
                .and_then(|x| x.strip_suffix(')'))
                .map(|x| {
                    let (cond, rest) = x.split_once('?').unwrap_or((x, ""));
                    let (a, b) = rest.split_once(':').unwrap_or((rest, ""));
                    let t = cond.trim();
                    if !t.is_empty() && t != "0" {
                        a.to_string()
                    } else {
                        b.to_string()
                    }
                });
            let val = if let Some(v) = if_val {
                v
            } else {
                match name
                    .strip_prefix("SHELL(")
                    .and_then(|x| x.strip_suffix(')'))
                {
                    // The only shell the simulation runs: `echo [-n] text`.
                    Some(cmd) => match cmd.strip_prefix("echo -n ") {
                        Some(t) => t.to_string(),
                        None => cmd
                            .strip_prefix("echo ")
                            .map(|t| format!("{t}\n"))
                            .unwrap_or_default(),
                    },
                    None => self.read_chan_var(c, &name).unwrap_or_default(),
                }
            };
            out.push_str(&val);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        eval_brackets(&out)
    }
}
