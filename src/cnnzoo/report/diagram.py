"""A network's figure in its paper's visual language, drawn from the profiler's trace of the real model.

`diagram(model_or_name)` reads `cnnzoo.analysis.trace` (the graph of leaf-module calls and functional ops, with
their inputs) and draws it top to bottom:

- every module that contains others is a group: its items (child modules, leaf calls, the ops it runs itself)
  are ranked by the longest path from the group's input and laid out in rows; items of one rank sit side by
  side (inception branches, fire expands, FractalNet columns), the item on the longest path on the group's
  axis; a row of parallel branches that all feed one join is centred over it;
- a layer is a box labelled as the papers label it ("3x3 conv, 64, /2", "3x3 max pool, /2", "fc 4096", "LRN",
  "concat", "+"), coloured by its operation class, with its output shape beside it; a convolution and the
  batch norm and activation that follow it (or precede it, pre-activation) are one box, the others named in
  its label (`depth="max"` draws every layer alone);
- an edge that skips rows is an arc on the right of its group: from the group's input it is an identity
  shortcut (solid), from a layer with weights a projection shortcut (dotted, as the ResNet paper draws them);
  dense connectivity is drawn the same way, one arc per connection;
- consecutive sibling groups with the same structure (the same layers, kernels, widths and strides) collapse
  into the first, drawn in full in a frame marked "x N" (ResNet-152's 36 blocks of conv4_x, a dense block's
  layers); `depth=N` draws the modules at nesting level N as single boxes;
- a module whose items would form a cycle with its siblings (FractalNet's columns, whose joins the block runs)
  is dissolved into its parent's items.

The layout is deterministic (no randomness, no external layout engine) and the SVG keeps its text as text. The
root's items are the top-level blocks (`Diagram.blocks`), each a `<g class="block" data-level="0">`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from cnnzoo.report.canvas import FONT_SIZE, Circle, Group, Line, Rect, Text, save_raster, svg, text_width

__all__ = ["diagram", "Diagram", "ANNOTATIONS", "COLOURS"]

ANNOTATIONS = ("shape", "params", "macs", "rf")
COLOURS = {  # fill by operation class
    "convolution": "#f7d08a", "linear": "#a9cdef", "normalisation": "#cfe6b8", "pooling": "#f3a9a9",
    "activation": "#dccbef", "elementwise": "#e4e4e4", "dropout": "#f1e3c8", "module": "#ffffff", "other": "#eeeeee",
}
FORMATS = (".svg", ".png", ".pdf")

SCREEN_H = 1700  # px: the default depth keeps a diagram this tall or less where it can
BOX_H = 22
ROW_GAP = 16
COL_GAP = 14
PAD = 8
TITLE_H = 15
LANE = 9
NOTE_GAP = 6
NOTE_SIZE = 9.5
NOTE_FILL = "#666"

_DROPPED = {"Identity", "Flatten"}  # no-ops of the drawing (a view, an identity)
_FUSABLE = {"normalisation", "activation", "dropout"}
_PLAIN_CONTAINERS = {"Sequential", "ModuleList", "ModuleDict"}
_ONE_BOX = {"PartiallyConnectedConv2d"}  # modules drawn as one layer (LeNet-5's C3: 16 maps from subsets)
_NAMED = {  # labels of the zoo's own layers, as their papers name them
    "EuclideanRBF": "RBF", "StochasticDepth": "x p (stochastic depth)", "DropPath": "drop-path",
    "ZeroPadShortcut": "subsample, zero pad", "AvgPoolZeroPadShortcut": "avg pool, /2 + zero pad",
}


# --- the structure ------------------------------------------------------------------------------------------------
@dataclass
class Item:
    """A drawn thing: a box (one or more fused layers, or a collapsed module) or a group (an expanded module)."""

    kind: str  # "box" | "group"
    path: str
    nodes: list  # trace nodes inside (for a group: all of them)
    label: str = ""
    prefix: str = ""  # fused layers before the weight layer ("BN · ReLU · ")
    suffix: str = ""  # fused layers after it (" · BN · ReLU")
    colour: str = COLOURS["other"]
    shape: str = "rect"  # rect | circle (the "+" of a residual)
    items: list = field(default_factory=list)  # a group's items, in order
    title: str = ""
    framed: bool = False
    repeat: int = 1
    module: bool = False  # a box standing for a whole module (collapsed by depth)
    note: str = ""
    # layout
    w: float = 0.0
    h: float = 0.0
    axis: float = 0.0  # x of the item's spine, from its left
    box_w: float = 0.0
    rows: list = field(default_factory=list)
    edges: list = field(default_factory=list)  # (source item index or -1 for the group's input, target index)
    rank: list = field(default_factory=list)
    lanes: int = 0
    content_right: float = 0.0


@dataclass
class Diagram:
    """A drawn network: `svg()` gives the document, `save(path)` writes .svg, .png or .pdf."""

    name: str
    input_size: tuple[int, int, int]
    depth: int | str | None
    root: Item
    annotate: tuple[str, ...]
    mode: str  # the pass drawn: "eval", or "train" where layers with weights run only in training (aux heads)
    width: float
    height: float
    primitives: list
    trace: object = field(default=None, repr=False)  # the Trace it was drawn from

    @property
    def blocks(self) -> int:
        """Top-level blocks drawn (the root's items)."""
        return len(self.root.items)

    def svg(self, *, standalone: bool = True) -> str:
        return svg(self.primitives, self.width, self.height, standalone=standalone,
                   attributes={"class": "cnnzoo-diagram", "data-model": self.name, "data-blocks": self.blocks},
                   marker=f"arrow-{self.name}")

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in FORMATS:
            raise ValueError(f"cannot write a diagram as {path.name!r}: the file must end in "
                             f"{', '.join(FORMATS)}")
        if not path.parent.is_dir():
            raise FileNotFoundError(f"cannot write {str(path)!r}: folder {str(path.parent)!r} does not exist")
        if suffix == ".svg":
            from cnnzoo.train.checkpoint import atomic_write_text

            atomic_write_text(path, self.svg())
            return path
        return save_raster(self.primitives, self.width, self.height, path)


def diagram(model_or_name: nn.Module | str, *, input_size: tuple[int, int, int] | None = None,
            depth: int | str | None = None, annotate=("shape",)) -> Diagram:
    """Draw a registered model (by name) or any module from its trace.

    Args:
        input_size: (C, H, W); default the model's native input.
        depth: None (every module expanded, repeats collapsed, a layer's norm and activation fused into its
            box), an int N >= 1 (modules at nesting level N drawn as single boxes), or "max" (every layer its
            own box, nothing collapsed).
        annotate: any of "shape", "params", "macs", "rf" (receptive field), written beside each box.
    """
    from cnnzoo.analysis.profile import profile

    if depth is not None and depth != "max" and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
        raise ValueError(f"depth must be a positive int, 'max' or None, got {depth!r}")
    if isinstance(annotate, str):
        annotate = tuple(a for a in annotate.split(",") if a)
    unknown = [a for a in annotate if a not in ANNOTATIONS]
    if unknown:
        raise ValueError(f"unknown annotation {unknown[0]!r}: choose from {', '.join(ANNOTATIONS)}")
    result = profile(model_or_name, input_size)
    trace = result.trace
    if any(count and trace.modules.get(path, (None, None, None))[2] is None
           for path, (count, _) in trace.owned.items()):
        # Modules with weights that do not run in eval (GoogLeNet's auxiliary classifiers): draw the training pass.
        trained = profile(model_or_name, input_size, mode="train").trace
        if len(trained.nodes) > len(trace.nodes):
            trace = trained
    root = _Builder(trace, depth, tuple(annotate)).build()
    _measure(root)
    if depth is None and root.h > SCREEN_H:  # the deepest level that fits a screen, else the shallowest
        deepest = max((len(p.split(".")) for p in trace.module_types if p), default=1)
        for level in range(deepest - 1, 0, -1):
            root = _Builder(trace, level, tuple(annotate)).build()
            _measure(root)
            if root.h <= SCREEN_H:
                break
    primitives: list = []
    margin = 12
    _place(root, margin, margin, 0, primitives, top=True)
    return Diagram(name=trace.model, input_size=trace.input_size, depth=depth, root=root, annotate=tuple(annotate), mode=trace.mode,
                   width=root.w + 2 * margin, height=root.h + 2 * margin, primitives=primitives, trace=trace)


class _Builder:
    def __init__(self, trace, depth, annotate):
        self.trace, self.depth, self.annotate = trace, depth, annotate
        self.full = depth == "max"
        nodes = [n for n in trace.graph_nodes()]
        # Drop no-op nodes (identity, flatten): their consumers read their producer.
        self.source: dict[int, int] = {}
        kept = []
        for n in nodes:
            if n.kind == "module" and n.type in _DROPPED and len(n.inputs) == 1:
                self.source[n.index] = self._resolve(n.inputs[0])
            else:
                kept.append(n)
        self.nodes = kept
        self.inputs = {n.index: tuple(dict.fromkeys(self._resolve(i) for i in n.inputs)) for n in kept}
        self.types = trace.module_types
        # Pre-activation (He et al. 2016b; DenseNet's BN-ReLU-Conv): the sums and concatenations feed batch norms,
        # so a norm and activation belong to the convolution after them, not before.
        kinds = {n.index: n for n in kept}
        after_join = [_class_of(kinds[n.index]) for n in kept
                      if any(kinds.get(i) is not None and kinds[i].kind == "op" and kinds[i].type in ("add", "cat")
                             for i in self.inputs[n.index])]
        self.pre = after_join.count("normalisation") > after_join.count("activation")

    def _resolve(self, i: int) -> int:
        while i in self.source:
            i = self.source[i]
        return i

    def build(self) -> Item:
        nodes = [n for n in self.nodes if n.kind != "input"]
        root = self._group("", nodes, level=0)
        self._annotate(root)
        return root

    def _annotate(self, item: Item) -> None:
        if item.kind == "box":
            item.note = self.note(item)
            if item.repeat > 1:
                item.note = f"x {item.repeat}" + (f" · {item.note}" if item.note else "")
        for child in item.items:
            self._annotate(child)

    # A group's items: leaf calls and ops of this module, and child modules (expanded or boxed).
    def _group(self, path: str, nodes: list, level: int) -> Item:
        keys: dict = {}
        prefix = path + "." if path else ""
        for n in nodes:
            rel = n.path[len(prefix):] if n.path.startswith(prefix) else n.path
            if n.path == path and n.kind == "op":
                keys[("n", n.index)] = [n]
            elif n.kind == "module" and "." not in rel:
                keys[("n", n.index)] = [n]
            else:
                keys.setdefault(("c", prefix + rel.split(".")[0]), []).append(n)
        parts = list(keys.items())
        parts = self._dissolve_cycles(parts, prefix)
        items = []
        for (kind, key), members in parts:
            if kind == "n":
                items.append(self._box(members))
            else:
                items.append(self._child(key, members, level))
        group = Item("group", path, nodes, items=items)
        group.title = self._title(path)
        group.framed = bool(path) and self.types.get(path, "") not in _PLAIN_CONTAINERS
        self._connect(group)
        if not self.full:
            self._collapse_repeats(group)
            self._fuse(group)
        return group

    def _child(self, path: str, members: list, level: int) -> Item:
        type_name = self.types.get(path, "")
        if type_name in _ONE_BOX:
            return self._module_box(path, members, _one_box_label(members))
        if self.depth not in (None, "max") and level + 1 >= self.depth:
            return self._module_box(path, members, _module_label(type_name or path.rsplit(".", 1)[-1], members))
        group = self._group(path, members, level + 1)
        if len(group.items) == 1 and group.repeat == 1:  # a wrapper of one layer (or one fused box)
            only = group.items[0]
            only.nodes = members
            return only
        return group

    def _dissolve_cycles(self, parts: list, prefix: str) -> list:
        """Replace child modules that take part in a cycle of the item graph by their own items."""
        for _ in range(8):
            owner = {}
            for i, (_, members) in enumerate(parts):
                for n in members:
                    owner[n.index] = i
            succ: dict[int, set] = {i: set() for i in range(len(parts))}
            for i, (_, members) in enumerate(parts):
                for n in members:
                    for j in self.inputs[n.index]:
                        if j in owner and owner[j] != i:
                            succ[owner[j]].add(i)
            cyclic = _in_cycles(succ)
            dissolve = {i for i in cyclic if parts[i][0][0] == "c"}
            if not dissolve:
                return parts
            new = []
            for i, ((kind, key), members) in enumerate(parts):
                if i not in dissolve:
                    new.append(((kind, key), members))
                    continue
                sub: dict = {}
                inner = key + "."
                for n in members:
                    rel = n.path[len(inner):] if n.path.startswith(inner) else ""
                    if n.path == key or "." not in rel:
                        sub[("n", n.index)] = [n]
                    else:
                        sub.setdefault(("c", inner + rel.split(".")[0]), []).append(n)
                new.extend(sub.items())
            parts = sorted(new, key=lambda p: p[1][0].index)
        return parts

    def _title(self, path: str) -> str:
        type_name = self.types.get(path, "")
        return f"{path} · {type_name}" if path else type_name

    # Boxes.
    def _box(self, members: list) -> Item:
        n = members[0]
        cls = _class_of(n)
        label = _label(n)
        item = Item("box", n.path, list(members), label=label, colour=COLOURS.get(cls, COLOURS["other"]))
        if n.kind == "op" and n.type == "add":
            item.shape, item.label = "circle", "+"
        return item

    def _module_box(self, path: str, members: list, label: str) -> Item:
        classes = [_class_of(n) for n in members]
        weights = [c for c in classes if c in ("convolution", "linear")]
        # One weight layer with its norm and activation reads as that layer; anything more as a module.
        single = len(weights) == 1 and all(c in _FUSABLE or c == weights[0] for c in classes)
        colour = COLOURS[weights[0]] if single else COLOURS["module"]
        return Item("box", path, list(members), label=label, colour=colour, module=True)

    # Edges between a group's items: (source index or -1 for the group's input, target index).
    def _connect(self, group: Item) -> None:
        owner = {}
        for i, item in enumerate(group.items):
            for n in item.nodes:
                owner[n.index] = i
        edges = []
        for i, item in enumerate(group.items):
            for n in item.nodes:
                for j in self.inputs[n.index]:
                    source = owner.get(j, -1)
                    if source != i and (source, i) not in edges:
                        edges.append((source, i))
        group.edges = edges

    def _signature(self, item: Item) -> tuple:
        base = item.path + "."
        local = {n.index: k for k, n in enumerate(item.nodes)}
        out = []
        for n in item.nodes:
            a = n.attributes
            key = (a.get("kernel_size"), a.get("stride"), a.get("out_channels"), a.get("groups"),
                   a.get("out_features"))
            rel = n.path[len(base):] if n.path.startswith(base) else "."
            rel = ".".join("#" if p.isdigit() else p for p in rel.split("."))  # denselayer1 vs 2 stay distinct
            sources = tuple(sorted({local.get(j, -1) for j in self.inputs[n.index]}))
            out.append((rel, n.type, key, sources))
        return tuple(out)

    def _collapse_repeats(self, group: Item) -> None:
        """Runs of consecutive sibling groups with one structure become their first, marked x N."""
        items = group.items
        if len(items) < 2:
            return
        signatures = [self._signature(it) if it.kind == "group" or it.module else None for it in items]
        sources: dict[int, set] = {k: set() for k in range(len(items))}
        for s, t in group.edges:
            sources[t].add(s)
        kept = []
        i = 0
        while i < len(items):
            j = i + 1
            while j < len(items) and signatures[i] is not None and signatures[j] == signatures[i]:
                j += 1
            if items[i].kind == "box" and j - i < 3:  # two single boxes in a row stay two (a 3x3 conv twice)
                j = i + 1
            if j - i > 3 and any(len(sources[k]) > 1 for k in range(i + 1, j)):
                # Dense connectivity (each reads all the earlier ones): two drawn alone, with their arcs, then
                # the rest collapsed into the third.
                kept.extend(items[i:i + 2])
                i += 2
            shown = items[i]
            if j - i > 1:
                shown.repeat = j - i
                shown.framed = shown.kind == "group"
                shown.nodes = [n for it in items[i:j] for n in it.nodes]
            kept.append(shown)
            i = j
        if len(kept) == len(items):
            return
        group.items = kept
        self._connect(group)

    def _fuse(self, group: Item) -> None:
        """A weight layer and the norm/activation/dropout layers chained to it become one box."""
        items = group.items
        succ: dict[int, list] = {i: [] for i in range(len(items))}
        pred: dict[int, list] = {i: [] for i in range(len(items))}
        for s, t in group.edges:
            if s >= 0:
                succ[s].append(t)
            pred[t].append(s)
        chains: list[list[int]] = []
        used = set()
        for i in range(len(items)):
            if i in used:
                continue
            chain = [i]
            used.add(i)
            while True:
                last = chain[-1]
                if len(succ[last]) != 1:
                    break
                nxt = succ[last][0]
                if nxt in used or pred[nxt] != [last] or not _fusable(items, chain + [nxt]):
                    break
                if self.pre and any(_class_of(items[k].nodes[0]) in ("convolution", "linear") for k in chain):
                    break  # pre-activation: the weight layer ends its box
                chain.append(nxt)
                used.add(nxt)
            chains.append(chain)
        if all(len(c) == 1 for c in chains):
            return
        new = []
        for chain in chains:
            if len(chain) == 1:
                new.append(items[chain[0]])
                continue
            parts = [items[k] for k in chain]
            main = next((p for p in parts if p.nodes[0].type != "ReLU" and _class_of(p.nodes[0])
                         in ("convolution", "linear")), None)
            if main is None:
                main = next((p for p in parts if _class_of(p.nodes[0]) not in _FUSABLE), parts[0])
            before = [p.label for p in parts[:parts.index(main)]]
            after = [p.label for p in parts[parts.index(main) + 1:]]
            box = Item("box", main.path, [n for p in parts for n in p.nodes], label=main.label, colour=main.colour,
                       shape=main.shape)
            if [p.nodes[0].type for p in parts] == ["stack", "mean"]:
                box.label, before, after = "join (mean)", [], []
            box.prefix = "".join(f"{b} · " for b in before)
            box.suffix = "".join(f" · {a}" for a in after)
            new.append(box)
        group.items = new
        self._connect(group)

    def note(self, item: Item) -> str:
        if not self.annotate:
            return ""
        last = item.nodes[-1] if item.kind == "box" else None
        parts = []
        for a in self.annotate:
            if a == "shape" and last is not None and last.output_shape:
                parts.append("x".join(str(v) for v in last.output_shape[1:]))
            elif a == "params":
                owned = self.trace.owned
                count = sum(owned.get(p, (0, 0))[0] for p in {n.path for n in item.nodes if n.kind == "module"})
                if count:
                    parts.append(f"{_short(count)} params")
            elif a == "macs":
                macs = sum(n.macs for n in item.nodes)
                if macs:
                    parts.append(f"{_short(macs)} MACs")
            elif a == "rf" and last is not None and last.receptive_field is not None:
                parts.append(f"rf {last.receptive_field}")
        return " · ".join(parts)


def _in_cycles(succ: dict[int, set]) -> set:
    """Vertices on a cycle (Tarjan's strongly connected components of size > 1)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], set(), [0]

    def visit(v):
        work = [(v, iter(sorted(succ[v])))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        while work:
            node, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(succ[w]))))
                    advanced = True
                    break
                if w in on:
                    low[node] = min(low[node], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    component.append(w)
                    if w == node:
                        break
                if len(component) > 1:
                    out.update(component)

    for v in sorted(succ):
        if v not in index:
            visit(v)
    return out


def _fusable(items: list, chain: list[int]) -> bool:
    """A chain fuses when all are single-layer boxes, at most one has weights, the rest are norm/act/dropout."""
    classes = []
    for k in chain:
        it = items[k]
        if it.kind != "box" or it.shape != "rect" or it.prefix or it.suffix or len(it.nodes) != 1:
            if not (it.kind == "box" and it.shape == "circle" and k == chain[0]):
                return False
        classes.append(_class_of(it.nodes[0]) if it.kind == "box" else "group")
    types = [items[k].nodes[0].type for k in chain]
    if types == ["stack", "mean"]:  # FractalNet's join: the mean of the columns
        return True
    heavy = [c for c in classes if c not in _FUSABLE]
    if len(heavy) > 1:
        return False
    if items[chain[0]].shape == "circle":  # "+" then ReLU: the ReLU joins the sum's label
        return classes[1:] == ["activation"] * (len(classes) - 1)
    return True


_OP_CLASSES = {"relu": "activation", "relu_": "activation", "tanh": "activation", "sigmoid": "activation",
               "avg_pool2d": "pooling", "max_pool2d": "pooling", "adaptive_avg_pool2d": "pooling",
               "batch_norm": "normalisation", "dropout": "dropout"}


def _class_of(node) -> str:
    if node.kind == "op":
        if node.type == "mean" and _global_mean(node):
            return "pooling"
        return _OP_CLASSES.get(node.type, "elementwise")
    if "Dropout" in node.type or node.type in ("StochasticDepth", "DropPath"):
        return "dropout"
    if node.layer_class:
        return node.layer_class
    if "conv" in node.type.lower():
        return "convolution"
    if node.type in ("Linear", "EuclideanRBF"):
        return "linear"
    if "tanh" in node.type.lower() or "relu" in node.type.lower():
        return "activation"
    if "Subsampling" in node.type or "Pool" in node.type:
        return "pooling"
    if "LRN" in node.type or "Norm" in node.type:
        return "normalisation"
    return "other"


def _global_mean(node) -> bool:
    """A mean over the spatial axes: global average pooling written as a mean."""
    a, b = node.input_shape, node.output_shape
    return bool(a and b and len(a) == 4 and (len(b) == 2 or tuple(b[2:]) == (1, 1)))


def _pair(value):
    if isinstance(value, (tuple, list)):
        return tuple(value) if len(value) == 2 else (value[0], value[0])
    return (value, value)


def _label(node) -> str:
    a, t = node.attributes, node.type
    if node.kind == "op":
        if t == "mean" and _global_mean(node):
            return "global avg pool"
        return {"add": "+", "relu": "ReLU", "relu_": "ReLU", "tanh": "tanh", "cat": "concat", "stack": "join", "mean": "mean", "mul": "x", "pad": "zero pad",
                "index": "select maps"}.get(t, t)
    if "kernel_size" in a and "out_channels" in a:
        kh, kw = a["kernel_size"]
        text = f"{kh}x{kw} conv, {a['out_channels']}"
        stride = max(a["stride"])
        if stride > 1:
            text += f", /{stride}"
        if a["groups"] > 1:
            text += ", depthwise" if a["groups"] == a["in_channels"] else f", {a['groups']} groups"
        return text
    if "out_features" in a:
        return f"fc {a['out_features']}"
    if t in ("MaxPool2d", "AvgPool2d"):
        k, s = _pair(a["kernel_size"]), _pair(a["stride"] if a["stride"] is not None else a["kernel_size"])
        kind = "max" if t.startswith("Max") else "avg"
        return f"{k[0]}x{k[1]} {kind} pool" + (f", /{s[0]}" if s[0] > 1 else "")
    if t.startswith("Adaptive"):
        size = a.get("output_size")
        kind = "max" if "Max" in t else "avg"
        if size in (1, (1, 1), [1, 1]):
            return f"global {kind} pool"
        return f"adaptive {kind} pool"
    if t.startswith("BatchNorm"):
        return "BN"
    if "LRN" in t or t == "LocalResponseNorm":
        return "LRN"
    if "Dropout" in t:
        return "dropout" + (f" {a['p']:g}" if "p" in a else "")
    if t in ("ReLU", "ReLU6"):
        return "ReLU"
    if "Tanh" in t:
        return "tanh"
    if t == "Subsampling":
        return "subsample, /2"
    return _NAMED.get(t, t)


def _module_label(type_name: str, members: list) -> str:
    """A collapsed module: its weight layers in order when there are few ("1x1 conv, 128 → 3x3 conv, 32")."""
    weights = [n for n in members if n.kind == "module" and _class_of(n) in ("convolution", "linear")]
    labels = [_label(n) for n in weights]
    if 0 < len(labels) <= 3 and len(set(n.path for n in weights)) == len(weights):
        return " → ".join(labels)
    return type_name


def _one_box_label(members: list) -> str:
    convs = [n for n in members if "kernel_size" in n.attributes and "out_channels" in n.attributes]
    last = members[-1]
    if convs:
        kh, kw = convs[0].attributes["kernel_size"]
        return f"{kh}x{kw} conv, {last.output_shape[1]} (partial)"
    return last.type


def _short(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:g}"


# --- the layout -----------------------------------------------------------------------------------------------
def _measure(item: Item) -> None:
    """Sizes, bottom-up: a box from its label; a group from its rows of items, its lanes and its frame."""
    if item.kind == "box":
        text = item.prefix + item.label + item.suffix
        if item.shape == "circle":  # the "+" of a residual: its label and note on the left (arcs come from the right)
            item.box_w = BOX_H
            side = _circle_side(item)
            side_w = text_width(side, NOTE_SIZE) + NOTE_GAP if side else 0
            item.w, item.h, item.axis = side_w + item.box_w, BOX_H, side_w + BOX_H / 2
            return
        item.box_w = max(54.0, text_width(text) + 14)
        note_w = text_width(item.note, NOTE_SIZE) + NOTE_GAP + (4 if item.repeat > 1 else 0) if item.note else 0
        item.w, item.h, item.axis = item.box_w + note_w, BOX_H + (4 if item.repeat > 1 else 0), item.box_w / 2
        return
    for child in item.items:
        _measure(child)
    n = len(item.items)
    ranks = [0] * n
    for s, t in sorted(item.edges, key=lambda e: e[1]):  # items are in run order: sources come first
        if s >= 0:
            ranks[t] = max(ranks[t], ranks[s] + 1)
    item.rank = ranks
    # Longest path to the end, to choose each row's spine.
    tail = [0] * n
    for s, t in sorted(item.edges, key=lambda e: -e[0]):
        if s >= 0:
            tail[s] = max(tail[s], tail[t] + 1)
    rows: dict[int, list[int]] = {}
    for i, r in enumerate(ranks):
        rows.setdefault(r, []).append(i)
    consumers: dict[int, set] = {i: set() for i in range(n)}
    for s, t in item.edges:
        if s >= 0:
            consumers[s].add(t)
    item.rows = []
    left = right = 0.0
    for r in sorted(rows):
        members = rows[r]
        spine = max(members, key=lambda i: (ranks[i] + tail[i], -i))
        joined = len(members) > 1 and len({frozenset(consumers[i]) for i in members}) == 1 \
            and len(consumers[members[0]]) == 1
        if joined:  # parallel branches into one join: centred, in run order
            total = sum(item.items[i].w for i in members) + COL_GAP * (len(members) - 1)
            x, offsets = -total / 2, {}
            for i in members:
                offsets[i] = x
                x += item.items[i].w + COL_GAP
            row_left, row_right = total / 2, total / 2
        else:  # the spine on the axis, the others to its right in run order
            sp = item.items[spine]
            offsets = {spine: -sp.axis}
            x = sp.w - sp.axis + COL_GAP
            for i in members:
                if i != spine:
                    offsets[i] = x
                    x += item.items[i].w + COL_GAP
            row_left, row_right = sp.axis, x - COL_GAP
        height = max(item.items[i].h for i in members)
        item.rows.append((members, offsets, height))
        left, right = max(left, row_left), max(right, row_right)
    # Skip edges (more than one row down, or from the group's input to a later row) run in lanes on the right.
    skips = [e for e in item.edges if (e[0] < 0 and ranks[e[1]] > 0) or (e[0] >= 0 and ranks[e[1]] - ranks[e[0]] > 1)]
    item.lanes = len(skips)
    top = TITLE_H if item.framed else 0
    pad = PAD if item.framed else 0
    badge = text_width(f"x {item.repeat}", FONT_SIZE) + 6 if item.repeat > 1 else 0
    title_w = text_width(item.title, NOTE_SIZE) + 2 * pad + badge if item.framed else 0
    content_h = sum(h for _, _, h in item.rows) + ROW_GAP * (len(item.rows) - 1)
    item.axis = pad + left
    item.content_right = item.axis + right
    item.w = max(item.content_right + (LANE * item.lanes + 4 if item.lanes else 0) + pad, title_w)
    item.h = top + pad + content_h + pad + (ROW_GAP if item.framed else 0) * 0


def _place(item: Item, x: float, y: float, level: int, out: list, top: bool = False) -> None:
    """Absolute positions, top-down, and the primitives of the item at (x, y) (its top-left corner)."""
    css = "block"
    data = {"level": level, "path": item.path or "(model)", "kind": item.kind}
    if item.repeat > 1:
        data["repeat"] = item.repeat
    if top:
        g_children = out
    else:
        group = Group(css, data, title=_tooltip(item))
        out.append(group)
        g_children = group.children
    if item.kind == "box":
        _draw_box(item, x, y, g_children)
        return
    pad = PAD if item.framed else 0
    title = TITLE_H if item.framed else 0
    if item.framed:
        g_children.append(Rect(x, y, item.w, item.h, fill="#fbfbfb" if item.repeat == 1 else "#f4f7fb",
                               stroke="#9aa" if item.repeat == 1 else "#4a6fa5", dash=item.repeat == 1,
                               radius=6, width=1.0 if item.repeat == 1 else 1.6))
        g_children.append(Text(x + pad, y + 11, item.title, size=NOTE_SIZE, fill="#556"))
        if item.repeat > 1:
            g_children.append(Text(x + item.w - pad, y + 12, f"x {item.repeat}", anchor="end", bold=True,
                                   fill="#2f4f7f"))
    cy = y + title + pad
    anchors = {}  # item index -> (top x, top y, bottom x, bottom y, right x, middle y)
    for members, offsets, height in item.rows:
        for i in members:
            child = item.items[i]
            cx = x + item.axis + offsets[i]
            right = cx + child.axis + BOX_H / 2 if child.shape == "circle" else cx + (
                child.box_w if child.kind == "box" else child.w)
            anchors[i] = (cx + child.axis, cy, cx + child.axis, cy + child.h, right,
                          cy + (child.h / 2 if child.kind == "box" else TITLE_H / 2 + 2))
            _place(child, cx, cy, 0 if top else level + 1, g_children)
        cy += height + ROW_GAP
    # Edges.
    entry = (x + item.axis, y + (title if item.framed else 0))
    lane_x = x + item.content_right + 6
    ranks = item.rank
    for s, t in item.edges:
        tx, ty = anchors[t][0], anchors[t][1]
        skip = (s < 0 and ranks[t] > 0) or (s >= 0 and ranks[t] - ranks[s] > 1)
        if skip:
            sx, sy = (entry if s < 0 else (anchors[s][2], anchors[s][3]))
            rx, my = anchors[t][4], anchors[t][5]
            projection = (s >= 0 and item.items[t].shape == "circle"  # a shortcut with weights into a "+"
                          and any(_class_of(n) in ("convolution", "linear") for n in item.items[s].nodes))
            target = item.items[t]
            if target.kind == "box" and target.shape == "rect" and target.note:
                # Into the box's top edge near its right end, above the note written beside it.
                end = [(lane_x, ty - 5), (rx - 8, ty - 5), (rx - 8, ty)]
            else:
                end = [(lane_x, my), (rx + 1, my)]
            g_children.append(Line([(sx, sy + (4 if s < 0 else 0)), (lane_x, sy + (4 if s < 0 else 6)), *end],
                                   stroke="#4a6fa5" if s < 0 else "#555", dash=projection))
            lane_x += LANE
        elif s < 0:
            if (tx, ty) != entry:
                g_children.append(Line(_elbow(entry, (tx, ty)), arrow=True))
        else:
            g_children.append(Line(_elbow((anchors[s][2], anchors[s][3]), (tx, ty))))


def _elbow(a: tuple[float, float], b: tuple[float, float]) -> list[tuple[float, float]]:
    (x0, y0), (x1, y1) = a, b
    if abs(x0 - x1) < 0.5:
        return [(x0, y0), (x1, y1)]
    mid = y0 + min(ROW_GAP / 2, (y1 - y0) / 2) if y1 > y0 else y0
    return [(x0, y0), (x0, mid), (x1, mid), (x1, y1)]


def _circle_side(item: Item) -> str:
    return " · ".join(p for p in (item.suffix.strip(" ·"), item.note) if p)


def _draw_box(item: Item, x: float, y: float, out: list) -> None:
    if item.shape == "circle":
        r = BOX_H / 2
        cx = x + item.axis
        out.append(Circle(cx, y + r, r - 1, item.colour))
        out.append(Text(cx, y + r + 4, "+", anchor="middle", bold=True))
        side = _circle_side(item)
        if side:
            out.append(Text(cx - r - NOTE_GAP, y + r + 3.5, side, size=NOTE_SIZE, fill=NOTE_FILL, anchor="end"))
        return
    else:
        if item.repeat > 1:  # a stack of boxes
            out.append(Rect(x + 4, y + 4, item.box_w, BOX_H, fill=item.colour))
            out.append(Rect(x + 2, y + 2, item.box_w, BOX_H, fill=item.colour))
        out.append(Rect(x, y, item.box_w, BOX_H, fill=item.colour))
        parts = []
        if item.prefix:
            parts.append((item.prefix, "#555"))
        parts.append((item.label, "#111"))
        if item.suffix:
            parts.append((item.suffix, "#555"))
        out.append(Text(x + item.box_w / 2, y + BOX_H / 2 + 4, item.prefix + item.label + item.suffix,
                        anchor="middle", parts=tuple(parts)))
        label_end = x + item.box_w
    if item.repeat > 1:
        label_end += 4
    if item.note:
        out.append(Text(label_end + NOTE_GAP, y + BOX_H / 2 + 3.5, item.note, size=NOTE_SIZE, fill=NOTE_FILL))


def _tooltip(item: Item) -> str:
    if item.kind == "box":
        types = " → ".join(n.type for n in item.nodes[:6]) + (" …" if len(item.nodes) > 6 else "")
        return f"{item.path or '(model)'}: {types}"
    return item.title + (f", repeated {item.repeat} times" if item.repeat > 1 else "")
