"""OpenAssistant message trees: one row per message (``message_id``, ``parent_id``, ``role``, ``text``, ``rank``).

A whole-input converter: a conversation needs every row of its tree. From each root (no parent) it
follows the best-ranked reply (lowest ``rank``; unranked last; ties by input order) down to a leaf, or
with ``all_paths`` every root-to-leaf path. Trailing prompter turns are trimmed (nothing to train on).
The unit counted is the conversation: rows that belong to no emitted path because their parent chain is
broken are rejected one by one (``missing_field``), so nothing disappears without a reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ._common import Converted, Converter, Reject, RowReject, text_of

REQUIRED = ("message_id", "parent_id", "role", "text")


class OASST(Converter):
    name = "oasst"
    description = "message_id, parent_id, role (prompter/assistant), text, rank?"
    whole_input = True

    @classmethod
    def score(cls, columns: list[str], sample: list[dict[str, Any]]) -> tuple[float, list[str]]:
        if not set(REQUIRED) <= set(columns):
            return 0.0, []
        return 1.0, [c for c in (*REQUIRED, "rank", "message_tree_id") if c in columns]

    def convert_record(self, record: dict[str, Any]) -> dict[str, Any]:
        raise RowReject("missing_field", "an OASST message needs the rest of its tree")

    def convert_all(self, rows: Iterable[tuple[int, dict[str, Any]]]) -> Converted:
        rejects: list[Reject] = []
        nodes: dict[str, tuple[int, dict[str, Any], dict[str, str]]] = {}
        order: list[str] = []
        for row, rec in rows:
            try:
                mid = text_of(rec.get("message_id"), "message_id")
                if not mid:
                    raise RowReject("missing_field", "message_id is empty")
                if mid in nodes:
                    raise RowReject("missing_field", f"message_id {mid!r} appears twice")
                msg = {"role": self.role(rec.get("role")), "content": text_of(rec.get("text"), "text")}
            except RowReject as r:
                rejects.append(Reject(row, r.code, r.message, rec))
                continue
            nodes[mid] = (row, rec, msg)
            order.append(mid)
        children: dict[str, list[str]] = {}
        roots: list[str] = []
        for mid in order:
            parent = nodes[mid][1].get("parent_id")
            if parent in (None, ""):
                roots.append(mid)
            else:
                children.setdefault(str(parent), []).append(mid)
        position = {m: i for i, m in enumerate(order)}

        def key(m: str) -> tuple[int, float, int]:
            rank = nodes[m][1].get("rank")
            ok = isinstance(rank, (int, float)) and not isinstance(rank, bool) and rank == rank
            return (0 if ok else 1, float(rank) if ok else 0.0, position[m])

        reached: set[str] = set()
        out: list[tuple[int, dict[str, Any]]] = []
        for root in roots:
            paths: list[list[str]] = []
            if self.options.all_paths:
                stack = [[root]]
                while stack:
                    path = stack.pop()
                    kids = sorted(children.get(path[-1], []), key=key)
                    if not kids:
                        paths.append(path)
                    stack.extend(path + [k] for k in reversed(kids))
                paths.sort(key=lambda p: [position[m] for m in p])
            else:
                path = [root]
                while children.get(path[-1]):
                    path.append(min(children[path[-1]], key=key))
                paths.append(path)
            self._mark(root, children, reached)
            seen: set[tuple[str, ...]] = set()
            for path in paths:
                while path and nodes[path[-1]][2]["role"] != "assistant":
                    path = path[:-1]
                if not path:
                    continue
                if tuple(path) in seen:
                    continue
                seen.add(tuple(path))
                leaf_row = nodes[path[-1]][0]
                out.append((leaf_row, self.finish({"messages": [dict(nodes[m][2]) for m in path]})))
            if not seen:
                row, rec, _ = nodes[root]
                rejects.append(Reject(row, "no_assistant_turn", "the tree has no assistant reply", rec))
        for mid in order:
            if mid not in reached:
                row, rec, _ = nodes[mid]
                parent = rec.get("parent_id")
                rejects.append(
                    Reject(row, "missing_field", f"parent message {parent!r} is not in the input", rec)
                )
        out.sort(key=lambda x: x[0])
        rejects.sort(key=lambda r: r.row)
        return out, rejects

    @staticmethod
    def _mark(root: str, children: dict[str, list[str]], reached: set[str]) -> None:
        stack = [root]
        while stack:
            m = stack.pop()
            if m in reached:
                continue
            reached.add(m)
            stack.extend(children.get(m, []))
