//! Where a trace spends its time: each span's self time, and the critical path, the chain of
//! work the trace's end waited on.
//!
//! The critical path is Jaeger UI's: from a root's end, walk back through its last finishing
//! child, recursively; when a span has no child finishing before the point reached, the span
//! itself is on the path back to its start, and the walk returns to its parent at that start.
//! Children are first clipped to their parent's time (a child running past its parent's end did
//! not hold the parent up past it), and a child wholly outside its parent is left out with its
//! subtree.

use std::cmp::Reverse;

/// A span as the analysis needs it: its times, and its parent's index (which must come before
/// it: the timeline's depth-first order).
#[derive(Clone, Copy, Debug)]
pub struct Node {
    pub start: u64,
    pub end: u64,
    pub parent: Option<usize>,
}

/// A part of a span on the critical path: the span's index and the part's start and end.
pub type Section = (usize, u64, u64);

/// Each span's time not covered by any of its children (clipped to the span), in nanoseconds.
#[must_use]
pub fn self_times(nodes: &[Node]) -> Vec<u64> {
    let children = children(nodes);
    nodes
        .iter()
        .zip(&children)
        .map(|(node, kids)| {
            let end = node.end.max(node.start);
            let mut parts: Vec<(u64, u64)> = kids
                .iter()
                .map(|&c| (nodes[c].start.max(node.start), nodes[c].end.min(end)))
                .filter(|(s, e)| s < e)
                .collect();
            parts.sort_unstable();
            // The union of the children's parts, measured as it is swept from the left.
            let (mut covered, mut reach) = (0, node.start);
            for (s, e) in parts {
                if e > reach {
                    covered += e - s.max(reach);
                    reach = e;
                }
            }
            (end - node.start) - covered
        })
        .collect()
}

/// The critical path of every root's tree, from each root's end backwards.
#[must_use]
pub fn critical_path(nodes: &[Node]) -> Vec<Section> {
    let n = nodes.len();
    let mut clipped: Vec<Option<(u64, u64)>> = vec![None; n];
    // Children by their clipped end, ties to the one first in the timeline (as Jaeger picks).
    let mut by_end: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut roots = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let own = (node.start, node.end.max(node.start));
        match node.parent.filter(|&p| p < i) {
            None => {
                clipped[i] = Some(own);
                roots.push(i);
            }
            Some(p) => {
                if let Some((ps, pe)) = clipped[p] {
                    if own.0 <= pe && own.1 >= ps {
                        clipped[i] = Some((own.0.max(ps), own.1.min(pe)));
                        by_end[p].push(i);
                    }
                }
            }
        }
    }
    let end_of = |i: usize| clipped[i].map_or(0, |c| c.1);
    for kids in &mut by_end {
        kids.sort_by_key(|&c| (end_of(c), Reverse(c)));
    }
    let mut path = Vec::new();
    for root in roots {
        let mut current = root;
        // The start of the child the walk came back from, if it came back.
        let mut until: Option<u64> = None;
        loop {
            let (start, end) = clipped[current].unwrap_or_default();
            let to = until.unwrap_or(end);
            let kids = &by_end[current];
            let last = match until {
                None => kids.last().copied(),
                Some(u) => kids.partition_point(|&c| end_of(c) < u).checked_sub(1).map(|k| kids[k]),
            };
            match last {
                Some(child) => {
                    if end_of(child) != to {
                        path.push((current, end_of(child), to));
                    }
                    current = child;
                    until = None;
                }
                None => {
                    if start != to {
                        path.push((current, start, to));
                    }
                    if current == root {
                        break;
                    }
                    until = Some(start);
                    current = nodes[current].parent.unwrap_or(root);
                }
            }
        }
    }
    path
}

fn children(nodes: &[Node]) -> Vec<Vec<usize>> {
    let mut children = vec![Vec::new(); nodes.len()];
    for (i, node) in nodes.iter().enumerate() {
        if let Some(p) = node.parent.filter(|&p| p < i) {
            children[p].push(i);
        }
    }
    children
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(start: u64, end: u64, parent: Option<usize>) -> Node {
        Node { start, end, parent }
    }

    #[test]
    fn the_path_walks_back_through_the_last_finishing_children() {
        // Jaeger's example: A holds B and C one after the other; C finishes last.
        // |-------------A (0-100)--------------|
        //    |--B (10-40)--|    |--C (50-90)--|
        //                          |-D (60-70)-|
        let nodes = [node(0, 100, None), node(10, 40, Some(0)), node(50, 90, Some(0)), node(60, 70, Some(2))];
        let path = critical_path(&nodes);
        assert_eq!(
            path,
            [(0, 90, 100), (2, 70, 90), (3, 60, 70), (2, 50, 60), (0, 40, 50), (1, 10, 40), (0, 0, 10)]
        );
        // Every moment of the root's time is on the path once.
        assert_eq!(path.iter().map(|(_, s, e)| e - s).sum::<u64>(), 100);
        assert_eq!(self_times(&nodes), [30, 30, 30, 10]);
    }

    #[test]
    fn children_in_parallel_put_only_the_longest_on_the_path() {
        // B and C run together; C ends later, so the path goes through C only.
        let nodes = [node(0, 100, None), node(10, 60, Some(0)), node(20, 80, Some(0))];
        assert_eq!(critical_path(&nodes), [(0, 80, 100), (2, 20, 80), (0, 0, 20)]);
        // Self time counts the union of the children: 10-80 is covered.
        assert_eq!(self_times(&nodes)[0], 30);
    }

    #[test]
    fn children_past_their_parent_are_clipped_and_those_outside_it_left_out() {
        // B runs past A's end (an asynchronous child); C starts after A ended.
        let nodes =
            [node(0, 100, None), node(50, 150, Some(0)), node(120, 130, Some(0)), node(140, 145, Some(1))];
        assert_eq!(critical_path(&nodes), [(1, 50, 100), (0, 0, 50)]);
        assert_eq!(self_times(&nodes)[0], 50);
        // A span ending before it starts is drawn as an instant, and holds nobody up.
        assert_eq!(self_times(&[node(10, 5, None)]), [0]);
        assert_eq!(critical_path(&[node(10, 5, None)]), []);
    }

    #[test]
    fn every_root_has_its_own_path_and_a_wide_trace_is_walked_in_order() {
        let mut nodes = vec![node(0, 10, None), node(100, 110, None)];
        // 10,000 children of one span, each after the other: the path visits every one.
        nodes.push(node(0, 20_000, None));
        for k in 0..10_000u64 {
            nodes.push(node(2 * k, 2 * k + 1, Some(2)));
        }
        let path = critical_path(&nodes);
        assert_eq!(path[0], (0, 0, 10));
        assert_eq!(path[1], (1, 100, 110));
        // Each child, and the parent's moment before each (the first child starts with the parent).
        assert_eq!(path.len(), 2 + 10_000 * 2);
        assert_eq!(path.iter().filter(|(i, ..)| *i == 2).map(|(_, s, e)| e - s).sum::<u64>(), 10_000);
    }
}
