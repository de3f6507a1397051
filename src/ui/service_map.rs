//! The service map: the calls between services (ListServiceDependencies) drawn as a node-link
//! picture in SVG, callers left of the services they call, each edge labelled with its calls,
//! errors and p95; the databases, queues and remote hosts services call that send no spans of
//! their own are leaf nodes, each drawn by its kind.
//!
//! Layout is layered, as graph drawing tools lay out call graphs: each service's column is the
//! longest chain of calls that leads to it (calls that close a cycle are drawn backwards and do
//! not count), and services within a column are ordered by the mean row of their callers, which
//! keeps most edges from crossing.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt::Write,
};

use super::{chart::esc, duration_text, href, Colors};
use crate::query::proto::{PeerDependency, ServiceDependency};

/// Nodes (services, and the databases, queues and remote hosts they call) drawn at most: the
/// ones with the most calls in or out.
pub const MAX_NODES: usize = 60;
/// Edges drawn at most, between those services: the ones with the most calls.
pub const MAX_EDGES: usize = 300;

const COLUMN: f64 = 440.0;
const ROW: f64 = 64.0;
const NODE_W: f64 = 160.0;
const NODE_H: f64 = 30.0;
const MARGIN: f64 = 24.0;
/// Longest service name drawn whole, in characters (the full name is its title).
const MAX_LABEL_CHARS: usize = 22;

/// Where each service sits: its column and its row within the column.
#[derive(Debug, PartialEq)]
pub struct Layout {
    pub place: BTreeMap<String, (usize, usize)>,
    pub columns: usize,
    pub rows: usize,
}

/// Lays out `services` and those of `edges` (pairs of caller and called) in columns and rows.
pub fn layout<'a>(services: &BTreeSet<&'a str>, edges: &[(&'a str, &'a str)]) -> Layout {
    let services: BTreeSet<&str> =
        services.iter().copied().chain(edges.iter().flat_map(|(a, b)| [*a, *b])).collect();
    let mut callees: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in edges {
        if a != b {
            callees.entry(a).or_default().push(b);
        }
    }
    // Edges that close a cycle, found by a depth-first walk from every service in name order:
    // drawn, but not followed when columns are assigned.
    let mut back: BTreeSet<(&str, &str)> = BTreeSet::new();
    let mut state: HashMap<&str, u8> = HashMap::new(); // 1 on the path, 2 done
    for &root in &services {
        if state.contains_key(root) {
            continue;
        }
        let mut stack: Vec<(&str, usize)> = vec![(root, 0)];
        state.insert(root, 1);
        while let Some((node, next)) = stack.pop() {
            let out = callees.get(node).map_or(&[][..], Vec::as_slice);
            if let Some(&child) = out.get(next) {
                stack.push((node, next + 1));
                match state.get(child) {
                    Some(1) => {
                        back.insert((node, child));
                    }
                    Some(_) => {}
                    None => {
                        state.insert(child, 1);
                        stack.push((child, 0));
                    }
                }
            } else {
                state.insert(node, 2);
            }
        }
    }
    // Columns: the longest chain of forward calls leading to each service, found by relaxing
    // the edges in topological order.
    let forward: Vec<(&str, &str)> =
        edges.iter().copied().filter(|(a, b)| a != b && !back.contains(&(*a, *b))).collect();
    let mut indegree: BTreeMap<&str, usize> = services.iter().map(|s| (*s, 0)).collect();
    for (_, b) in &forward {
        *indegree.entry(b).or_default() += 1;
    }
    let mut ready: Vec<&str> = indegree.iter().filter(|(_, d)| **d == 0).map(|(s, _)| *s).collect();
    ready.reverse();
    let mut column: BTreeMap<&str, usize> = services.iter().map(|s| (*s, 0)).collect();
    while let Some(node) = ready.pop() {
        for (a, b) in forward.iter().filter(|(a, _)| *a == node) {
            let next = column[a] + 1;
            let c = column.get_mut(b).expect("every service has a column");
            *c = (*c).max(next);
            let d = indegree.get_mut(b).expect("every service has an in-degree");
            *d -= 1;
            if *d == 0 {
                ready.push(b);
            }
        }
    }
    let columns = column.values().max().map_or(0, |c| c + 1);
    // Rows: column by column, each service at the mean row of its callers in earlier columns
    // (services without one keep their name order), then numbered in that order.
    let mut row: HashMap<&str, f64> = HashMap::new();
    let mut rows = 0;
    for c in 0..columns {
        let mut here: Vec<(&str, f64)> = column
            .iter()
            .filter(|(_, col)| **col == c)
            .enumerate()
            .map(|(i, (s, _))| {
                let callers: Vec<f64> =
                    forward.iter().filter(|(_, b)| b == s).filter_map(|(a, _)| row.get(a).copied()).collect();
                let at = if callers.is_empty() {
                    i as f64
                } else {
                    callers.iter().sum::<f64>() / callers.len() as f64
                };
                (*s, at)
            })
            .collect();
        here.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(b.0)));
        for (i, (s, _)) in here.iter().enumerate() {
            row.insert(s, i as f64);
        }
        rows = rows.max(here.len());
    }
    let place = services.iter().map(|s| ((*s).to_owned(), (column[s], row[s] as usize))).collect();
    Layout { place, columns, rows }
}

fn short(name: &str) -> String {
    if name.chars().count() <= MAX_LABEL_CHARS {
        return name.to_owned();
    }
    let cut: String = name.chars().take(MAX_LABEL_CHARS - 1).collect();
    format!("{cut}…")
}

/// A node of the picture: a service, or a database, queue or remote host that a service calls
/// and that sends no spans of its own (a leaf).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Node<'a> {
    Service(&'a str),
    Peer { kind: &'a str, name: &'a str },
}

impl Node<'_> {
    /// Its key in the layout: a peer's starts with U+0000, which no stored service name holds.
    fn key(self) -> String {
        match self {
            Node::Service(name) => name.to_owned(),
            Node::Peer { kind, name } => format!("\0{kind}\0{name}"),
        }
    }
}

/// An arrow: calls from a service to a node.
struct Edge<'a> {
    parent: &'a str,
    child: Node<'a>,
    calls: u64,
    errors: u64,
    p95_nanos: u64,
}

/// The picture of `dependencies` and the `peers` services call, at most [`MAX_NODES`] nodes
/// and [`MAX_EDGES`] edges (the busiest); each service links to its traces (`carry` is the time
/// range to keep). Returns the SVG and how many nodes and edges were left out.
pub fn draw(
    dependencies: &[ServiceDependency],
    peers: &[PeerDependency],
    colors: &Colors,
    carry: &str,
) -> (String, usize, usize) {
    let edges: Vec<Edge<'_>> = dependencies
        .iter()
        .map(|d| Edge {
            parent: &d.parent,
            child: Node::Service(&d.child),
            calls: d.call_count,
            errors: d.error_count,
            p95_nanos: d.p95_nanos,
        })
        .chain(peers.iter().map(|p| Edge {
            parent: &p.parent,
            child: Node::Peer { kind: &p.kind, name: &p.peer },
            calls: p.call_count,
            errors: p.error_count,
            p95_nanos: p.p95_nanos,
        }))
        .collect();
    let mut traffic: BTreeMap<Node<'_>, u64> = BTreeMap::new();
    for e in &edges {
        *traffic.entry(Node::Service(e.parent)).or_default() += e.calls;
        *traffic.entry(e.child).or_default() += e.calls;
    }
    let mut busiest: Vec<(Node<'_>, u64)> = traffic.into_iter().collect();
    busiest.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let left_out = busiest.len().saturating_sub(MAX_NODES);
    let kept: BTreeSet<Node<'_>> = busiest.iter().take(MAX_NODES).map(|(n, _)| *n).collect();
    let mut drawn: Vec<&Edge<'_>> =
        edges.iter().filter(|e| kept.contains(&Node::Service(e.parent)) && kept.contains(&e.child)).collect();
    drawn.sort_by(|a, b| b.calls.cmp(&a.calls).then_with(|| (a.parent, a.child).cmp(&(b.parent, b.child))));
    let edges_left_out = edges.len() - drawn.len().min(MAX_EDGES);
    drawn.truncate(MAX_EDGES);
    let keys: BTreeMap<Node<'_>, String> = kept.iter().map(|n| (*n, n.key())).collect();
    let pairs: Vec<(&str, &str)> =
        drawn.iter().map(|e| (keys[&Node::Service(e.parent)].as_str(), keys[&e.child].as_str())).collect();
    let layout = layout(&keys.values().map(String::as_str).collect(), &pairs);
    let width = MARGIN * 2.0 + (layout.columns.max(1) - 1) as f64 * COLUMN + NODE_W;
    let height = MARGIN * 2.0 + (layout.rows.max(1) - 1) as f64 * ROW + NODE_H;
    let at = |node: Node<'_>| {
        let (c, r) = layout.place[&keys[&node]];
        (MARGIN + c as f64 * COLUMN, MARGIN + r as f64 * ROW)
    };
    let most = drawn.iter().map(|e| e.calls).max().unwrap_or(1).max(1) as f64;
    let (mut out_degree, mut in_degree): (HashMap<&str, usize>, HashMap<Node<'_>, usize>) =
        Default::default();
    for e in &drawn {
        *out_degree.entry(e.parent).or_default() += 1;
        *in_degree.entry(e.child).or_default() += 1;
    }
    let mut out = format!(
        r#"<svg class="service-map" viewBox="0 0 {width:.0} {height:.0}" width="{width:.0}" height="{height:.0}" role="img" aria-label="calls between services">"#
    );
    out.push_str(
        r#"<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerUnits="userSpaceOnUse" markerWidth="9" markerHeight="9" orient="auto"><path d="M0,0 L10,5 L0,10 z"/></marker><marker id="arrow-failing" viewBox="0 0 10 10" refX="9" refY="5" markerUnits="userSpaceOnUse" markerWidth="9" markerHeight="9" orient="auto"><path d="M0,0 L10,5 L0,10 z"/></marker></defs>"#,
    );
    for e in &drawn {
        let (px, py) = at(Node::Service(e.parent));
        let (cx, cy) = at(e.child);
        let (x1, y1) = (px + NODE_W, py + NODE_H / 2.0);
        let (x2, y2) = (cx, cy + NODE_H / 2.0);
        // A label sits where its edge is alone, and the edge bends away from there: near the
        // called node when the caller fans out to several (the edge bends early and runs level
        // into the node), near the caller when several call the same node, else halfway.
        let fans_out = out_degree[e.parent] > 1;
        let fans_in = in_degree[&e.child] > 1;
        let (bend, anchor) = match (fans_out, fans_in) {
            (true, false) => (0.2, "end"),
            (false, true) => (0.8, "start"),
            _ => (0.5, "middle"),
        };
        // A call to an earlier column (a cycle) or to itself loops around below.
        let path = if x2 > x1 {
            let bx = x1 + (x2 - x1) * bend;
            format!("M{x1:.1},{y1:.1} C{bx:.1},{y1:.1} {bx:.1},{y2:.1} {x2:.1},{y2:.1}")
        } else {
            let below = py.max(cy) + NODE_H + ROW / 2.0;
            format!(
                "M{x1:.1},{y1:.1} C{:.1},{below:.1} {:.1},{below:.1} {x2:.1},{y2:.1}",
                x1 + 60.0,
                x2 - 60.0
            )
        };
        let widthpx = 1.0 + 4.0 * (e.calls as f64).ln_1p() / most.ln_1p();
        let label = format!(
            "{} call{}{} · p95 {}",
            e.calls,
            if e.calls == 1 { "" } else { "s" },
            if e.errors > 0 { format!(" · {} failed", e.errors) } else { String::new() },
            duration_text(e.p95_nanos)
        );
        let (mx, my, anchor) = if x2 <= x1 {
            ((x1 + x2) / 2.0, py.max(cy) + NODE_H + ROW / 2.0 - 18.0, "middle")
        } else {
            match anchor {
                "end" => (x2 - 12.0, y2 - 6.0, anchor),
                "start" => (x1 + 8.0, y1 - 6.0, anchor),
                _ => ((x1 + x2) / 2.0, (y1 + y2) / 2.0 - 6.0, anchor),
            }
        };
        let child = match e.child {
            Node::Service(name) | Node::Peer { name, .. } => name,
        };
        let _ = write!(
            out,
            r#"<g class="edge{}" data-edge="{} -> {}" data-calls="{}" data-errors="{}" data-p95="{}"><title>{} → {}: {}</title><path d="{path}" stroke-width="{widthpx:.1}" marker-end="url(#{})"/><text x="{mx:.1}" y="{my:.1}" text-anchor="{anchor}">{}</text></g>"#,
            if e.errors > 0 { " failing" } else { "" },
            esc(e.parent),
            esc(child),
            e.calls,
            e.errors,
            e.p95_nanos,
            esc(e.parent),
            esc(child),
            esc(&label),
            if e.errors > 0 { "arrow-failing" } else { "arrow" },
            esc(&label),
        );
    }
    for &node in keys.keys() {
        let (x, y) = at(node);
        let (ix, iy) = (x + 14.0, y + NODE_H / 2.0);
        let (tx, ty) = (x + 26.0, y + NODE_H / 2.0 + 4.5);
        match node {
            Node::Service(service) => {
                let link = href("/traces", &[("service", service)], carry);
                let _ = write!(
                    out,
                    r#"<a href="{}" class="node" data-service="{}"><title>{}</title><rect x="{x:.1}" y="{y:.1}" width="{NODE_W}" height="{NODE_H}" rx="6" style="stroke:{}"/><circle cx="{ix:.1}" cy="{iy:.1}" r="5" style="fill:{}"/><text x="{tx:.1}" y="{ty:.1}">{}</text></a>"#,
                    esc(&link),
                    esc(service),
                    esc(service),
                    colors.of(service),
                    colors.of(service),
                    esc(&short(service)),
                );
            }
            Node::Peer { kind, name } => {
                let _ = write!(
                    out,
                    r#"<g class="node peer {kind}" data-peer="{}" data-kind="{kind}"><title>{} ({})</title><rect x="{x:.1}" y="{y:.1}" width="{NODE_W}" height="{NODE_H}" rx="{}"/>{}<text x="{tx:.1}" y="{ty:.1}">{}</text></g>"#,
                    esc(name),
                    esc(name),
                    peer_kind_text(kind),
                    if kind == "remote" { 15 } else { 2 },
                    peer_icon(kind, ix, iy),
                    esc(&short(name)),
                );
            }
        }
    }
    out.push_str("</svg>");
    (out, left_out, edges_left_out)
}

/// What a peer kind is, in words.
pub fn peer_kind_text(kind: &str) -> &'static str {
    match kind {
        "database" => "database",
        "messaging" => "queue",
        _ => "remote service or host",
    }
}

/// A small picture of a peer's kind, centred on (x, y): a cylinder for a database, stacked
/// messages for a queue, a globe for a remote host.
fn peer_icon(kind: &str, x: f64, y: f64) -> String {
    match kind {
        "database" => format!(
            r#"<path class="icon" d="M{l:.1},{t:.1} v9 a5,2 0 0 0 10,0 v-9 a5,2 0 0 0 -10,0 a5,2 0 0 0 10,0"/>"#,
            l = x - 5.0,
            t = y - 4.5
        ),
        "messaging" => format!(
            r#"<path class="icon" d="M{l:.1},{a:.1} h10 M{l:.1},{b:.1} h10 M{l:.1},{c:.1} h10"/>"#,
            l = x - 5.0,
            a = y - 4.0,
            b = y,
            c = y + 4.0
        ),
        _ => format!(
            r#"<circle class="icon" cx="{x:.1}" cy="{y:.1}" r="5.5"/><path class="icon" d="M{l:.1},{y:.1} h11 M{x:.1},{t:.1} a3,5.5 0 0 0 0,11 a3,5.5 0 0 0 0,-11"/>"#,
            l = x - 5.5,
            t = y - 5.5
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(layout: &Layout) -> Vec<(&str, usize)> {
        layout.place.iter().map(|(s, (c, _))| (s.as_str(), *c)).collect()
    }

    #[test]
    fn callers_sit_left_of_what_they_call_by_the_longest_chain() {
        let layout =
            layout(&BTreeSet::new(), &[("web", "api"), ("api", "db"), ("web", "db"), ("web", "cache")]);
        assert_eq!(columns(&layout), [("api", 1), ("cache", 1), ("db", 2), ("web", 0)]);
        assert_eq!((layout.columns, layout.rows), (3, 2));
    }

    #[test]
    fn a_cycle_is_laid_out_without_looping() {
        let layout = layout(&BTreeSet::new(), &[("a", "b"), ("b", "c"), ("c", "a"), ("b", "b")]);
        assert_eq!(columns(&layout), [("a", 0), ("b", 1), ("c", 2)]);
    }

    #[test]
    fn services_in_a_column_share_no_row() {
        let edges: Vec<(String, String)> =
            (0..30).map(|i| (format!("s{}", i % 5), format!("s{}", 5 + i % 11))).collect();
        let pairs: Vec<(&str, &str)> = edges.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let layout = layout(&BTreeSet::new(), &pairs);
        let mut seen = BTreeSet::new();
        for place in layout.place.values() {
            assert!(seen.insert(*place), "two services at {place:?}");
        }
    }

    #[test]
    fn a_large_graph_is_drawn_bounded() {
        let dependencies: Vec<ServiceDependency> = (0..5_000)
            .map(|i| ServiceDependency {
                parent: format!("svc-{}", i % 300),
                child: format!("svc-{}", (i * 7 + 1) % 300),
                call_count: i as u64 + 1,
                ..Default::default()
            })
            .collect();
        let peers: Vec<PeerDependency> = (0..500)
            .map(|i| PeerDependency {
                parent: format!("svc-{}", i % 300),
                kind: "database".into(),
                peer: format!("db-{i}"),
                call_count: 1,
                ..Default::default()
            })
            .collect();
        let (svg, left_out, edges_left_out) = draw(&dependencies, &peers, &Colors::default(), "");
        assert_eq!(left_out, 300 + 500 - MAX_NODES);
        assert_eq!(svg.matches(r#"class="node"#).count(), MAX_NODES);
        assert_eq!(
            svg.matches(r#"<g class="edge"#).count(),
            dependencies.len() + peers.len() - edges_left_out
        );
        assert!(svg.matches(r#"<g class="edge"#).count() <= MAX_EDGES);
        assert!(svg.len() < 2_000_000, "{} bytes", svg.len());
    }

    #[test]
    fn names_in_the_picture_are_escaped() {
        let d = ServiceDependency {
            parent: "<script>".into(),
            child: "b\"".into(),
            call_count: 1,
            ..Default::default()
        };
        let p = PeerDependency {
            parent: "b\"".into(),
            kind: "remote".into(),
            peer: "<img src=x>".into(),
            call_count: 1,
            ..Default::default()
        };
        let (svg, _, _) = draw(&[d], &[p], &Colors::default(), "");
        assert!(!svg.contains("<script>") && svg.contains("&lt;script&gt;") && svg.contains("b&quot;"));
        assert!(!svg.contains("<img") && svg.contains("&lt;img src=x&gt;"));
    }

    #[test]
    fn a_database_is_a_leaf_right_of_its_callers() {
        let d = ServiceDependency {
            parent: "web".into(),
            child: "api".into(),
            call_count: 3,
            ..Default::default()
        };
        let peer = |parent: &str| PeerDependency {
            parent: parent.into(),
            kind: "database".into(),
            peer: "postgresql orders".into(),
            call_count: 2,
            ..Default::default()
        };
        let (svg, _, _) = draw(&[d], &[peer("web"), peer("api")], &Colors::default(), "");
        assert_eq!(svg.matches(r#"data-peer="postgresql orders""#).count(), 1, "one node for both callers");
        assert_eq!(svg.matches(r#"data-edge="api -> postgresql orders""#).count(), 1);
        let x = |marker: &str| -> f64 {
            let at = svg.find(marker).expect(marker);
            let rest = &svg[at..];
            let x = &rest[rest.find("<rect x=\"").expect("a rect") + 9..];
            x[..x.find('"').expect("a quote")].parse().expect("a number")
        };
        assert!(x(r#"data-peer="postgresql orders""#) > x(r#"data-service="api""#));
        assert!(x(r#"data-service="api""#) > x(r#"data-service="web""#));
    }
}
