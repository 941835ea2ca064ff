//! A search tree as the answer file records it (`tree.tree`: nodes of type `Thought`,
//! `Action`, `Action Input`, each with `children`), drawn left to right: depth across,
//! leaves down, each node coloured by what it is and, for a call, by its observation's
//! status; pruned nodes hollow. Hovering a node shows its text.

use std::fmt::Write;

use serde_json::Value;

use crate::svg::escape;

const DX: f64 = 56.0;
const DY: f64 = 16.0;
const PAD: f64 = 14.0;
/// Nodes drawn at most; a larger tree is cut at this many (in depth-first order, so
/// later branches go first) and says so.
const MAX_NODES: usize = 2_000;

struct Placed<'a> {
    node: &'a Value,
    depth: usize,
    y: f64,
    parent: Option<usize>,
}

/// The colour of a node: its type, and for a call its status.
fn color(node: &Value) -> &'static str {
    match node.get("node_type").and_then(Value::as_str) {
        Some("Thought") => "#4e79a7",
        Some("Action") => "#f28e2b",
        Some("Action Input") => match node.get("observation_code").and_then(Value::as_u64) {
            None => "#9c9c9c",
            Some(0) => "#59a14f",
            Some(3) => "#edc948",
            Some(4) => "#b07aa1",
            Some(_) => "#e15759",
        },
        _ => "#9c9c9c",
    }
}

/// The legend's entries, in the order of [`color`].
pub const LEGEND: [(&str, &str); 7] = [
    ("thought", "#4e79a7"),
    ("action", "#f28e2b"),
    ("call: ok", "#59a14f"),
    ("call: error", "#e15759"),
    ("final answer", "#edc948"),
    ("gave up", "#b07aa1"),
    ("root", "#9c9c9c"),
];

fn cut(text: &str, chars: usize) -> String {
    let mut out: String = text.chars().take(chars).collect();
    if text.chars().count() > chars {
        out.push('…');
    }
    out
}

fn tooltip(node: &Value) -> String {
    let field = |k: &str| node.get(k).and_then(Value::as_str).unwrap_or_default();
    let mut text = format!("{}: {}", field("node_type"), cut(field("description"), 300));
    if let Some(obs) = node.get("observation").and_then(Value::as_str) {
        let _ = write!(text, "\nobservation: {}", cut(obs, 300));
    }
    if node.get("pruned").and_then(Value::as_bool) == Some(true) {
        text.push_str("\n(pruned)");
    }
    text
}

/// The tree as an `<svg>`, and how many nodes it has.
pub fn draw(root: &Value, label: &str) -> (String, usize) {
    // Leaves take rows in order; a parent sits at the mean of its children's rows.
    let mut placed: Vec<Placed<'_>> = Vec::new();
    let mut next_row = 0.0;
    let mut truncated = false;
    place(root, 0, None, &mut placed, &mut next_row, &mut truncated);
    let depth = placed.iter().map(|p| p.depth).max().unwrap_or(0);
    let width = PAD * 2.0 + DX * depth as f64 + 12.0;
    let height = PAD * 2.0 + DY * (next_row - 1.0).max(0.0) + 12.0;
    let mut out = format!(
        "<svg class=\"tree\" viewBox=\"0 0 {width:.0} {height:.0}\" width=\"{width:.0}\" height=\"{height:.0}\" role=\"img\" aria-label=\"{}\" xmlns=\"http://www.w3.org/2000/svg\">",
        escape(label)
    );
    let at = |p: &Placed<'_>| (PAD + DX * p.depth as f64, PAD + DY * p.y);
    for p in &placed {
        if let Some(parent) = p.parent {
            let (x1, y1) = at(&placed[parent]);
            let (x2, y2) = at(p);
            let _ = write!(
                out,
                "<path d=\"M{x1:.1},{y1:.1} C{:.1},{y1:.1} {:.1},{y2:.1} {x2:.1},{y2:.1}\" class=\"edge\"/>",
                (x1 + x2) / 2.0,
                (x1 + x2) / 2.0
            );
        }
    }
    for p in &placed {
        let (x, y) = at(p);
        let pruned = p.node.get("pruned").and_then(Value::as_bool) == Some(true);
        let c = color(p.node);
        let fill = if pruned { "#fff" } else { c };
        let _ = write!(
            out,
            "<circle class=\"node\" cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"5\" fill=\"{fill}\" stroke=\"{c}\" stroke-width=\"2\"><title>{}</title></circle>",
            escape(&tooltip(p.node))
        );
    }
    if truncated {
        let _ = write!(
            out,
            "<text x=\"{PAD}\" y=\"{:.0}\" class=\"label\">(first {MAX_NODES} nodes)</text>",
            height - 2.0
        );
    }
    out.push_str("</svg>");
    (out, placed.len())
}

fn place<'a>(
    node: &'a Value,
    depth: usize,
    parent: Option<usize>,
    placed: &mut Vec<Placed<'a>>,
    next_row: &mut f64,
    truncated: &mut bool,
) -> f64 {
    let index = placed.len();
    placed.push(Placed {
        node,
        depth,
        y: 0.0,
        parent,
    });
    let children: Vec<&Value> = node
        .get("children")
        .and_then(Value::as_array)
        .map(|c| c.iter().collect())
        .unwrap_or_default();
    let mut rows = Vec::new();
    for child in children {
        if placed.len() >= MAX_NODES {
            *truncated = true;
            break;
        }
        rows.push(place(
            child,
            depth + 1,
            Some(index),
            placed,
            next_row,
            truncated,
        ));
    }
    let y = if rows.is_empty() {
        *next_row += 1.0;
        *next_row - 1.0
    } else {
        rows.iter().sum::<f64>() / rows.len() as f64
    };
    placed[index].y = y;
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_node_is_drawn_with_its_text_escaped() {
        let tree = json!({"node_type": "Action Input", "description": "", "children": [
            {"node_type": "Thought", "description": "use <f>", "children": [
                {"node_type": "Action", "description": "f", "children": [
                    {"node_type": "Action Input", "description": "{}", "observation": "{\"ok\": 1}",
                     "observation_code": 0, "children": []}]}]},
            {"node_type": "Thought", "description": "give up", "pruned": true, "children": []}]});
        let (svg, nodes) = draw(&tree, "t");
        assert_eq!(nodes, 5);
        assert_eq!(svg.matches("<circle").count(), 5);
        assert_eq!(svg.matches("<path").count(), 4);
        assert!(svg.contains("Thought: use &lt;f&gt;"), "{svg}");
        assert!(svg.contains("fill=\"#fff\""), "the pruned node is hollow");
        assert!(svg.contains("#59a14f"), "the ok call is green");
    }
}
