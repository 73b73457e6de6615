"""ListOps: the generator writes LRA's released layout by LRA's procedure; loader, tokens, values, subtrees.

Every value here is checked against an evaluator written in this file (a recursive parser of the
released left-nested pair format), never against apps.lra.listops's own evaluator.
"""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path

import pytest

from apps.common.errors import UserError
from apps.lra.listops import (
    VOCAB,
    encode,
    evaluate,
    generate_listops,
    read_listops,
    subtree_targets,
)

OPS = {"[MAX", "[MIN", "[MED", "[SM"}
SMALL = {"min_len": 20, "max_len": 200, "max_depth": 6, "max_args": 5, "progress": False}


# ---- the test's own reading of the released format -------------------------------------------

def parse_pairs(tokens: list[str]):
    """LRA's printed tree -> nested pairs: '( X Y )' is the pair (X, Y); atoms are operator, digit or ']'."""
    def item(i: int):
        if tokens[i] == "(":
            left, i = item(i + 1)
            right, i = item(i)
            assert tokens[i] == ")", f"expected ')' at {i}"
            return (left, right), i + 1
        assert tokens[i] in OPS or tokens[i] == "]" or tokens[i].isdigit(), tokens[i]
        return tokens[i], i + 1
    tree, end = item(0)
    assert end == len(tokens)
    return tree


def to_nodes(pair):
    """Nested pairs -> (operator, [children]) / int, unfolding (((op, a1), a2), ..., ']')."""
    if isinstance(pair, str):
        assert pair.isdigit()
        return int(pair)
    args = []
    while isinstance(pair, tuple):
        pair, last = pair
        args.append(last)
    op = pair
    assert op in OPS and args[0] == "]", (op, args[:1])
    return op, [to_nodes(a) for a in reversed(args[1:])]


def value(node) -> int:
    if isinstance(node, int):
        return node
    op, children = node
    vals = [value(c) for c in children]
    return {"[MAX": max, "[MIN": min, "[SM": lambda v: sum(v) % 10,
            "[MED": lambda v: int(statistics.median(v))}[op](vals)


def depth_and_args(node, depth: int = 1) -> tuple[int, int, int]:
    """(deepest level, fewest arguments, most arguments) below ``node``; the root is level 1."""
    if isinstance(node, int):
        return depth, 99, 0
    _, children = node
    stats = [depth_and_args(c, depth + 1) for c in children]
    return (max(s[0] for s in stats), min([len(children)] + [s[1] for s in stats]),
            max([len(children)] + [s[2] for s in stats]))


def length(node) -> int:
    return 1 if isinstance(node, int) else 2 + sum(length(c) for c in node[1])


def bare_tokens(node) -> list[str]:
    """The expression without parentheses, written by the test."""
    if isinstance(node, int):
        return [str(node)]
    op, children = node
    return [op] + [t for c in children for t in bare_tokens(c)] + ["]"]


def subtree_labels(node) -> list[int]:
    """The test's own ListOpsSubTrees labels: -100 at operators and digits, the subtree's value at ']'."""
    if isinstance(node, int):
        return [-100]
    return [-100] + [x for c in node[1] for x in subtree_labels(c)] + [value(node)]


# ---- generator ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return generate_listops(tmp_path_factory.mktemp("listops"), seed=3, n_train=300, n_val=40, n_test=60, **SMALL)


def test_writes_the_released_layout(small):
    assert small.name == "listops-1000"
    assert sorted(p.name for p in small.iterdir()) == ["basic_test.tsv", "basic_train.tsv", "basic_val.tsv"]
    raw = (small / "basic_val.tsv").read_bytes()
    assert raw.startswith(b"Source\tTarget\r\n")  # Python's csv writer, as LRA wrote the release
    lines = raw.split(b"\r\n")
    assert lines[-1] == b"" and len(lines) == 1 + 40 + 1
    first = lines[1].decode()
    assert first.startswith("( ") and first.count("\t") == 1 and first.split("\t")[0].endswith("] )")
    assert [len(read_listops(small / f"basic_{s}.tsv")) for s in ("train", "val", "test")] == [300, 40, 60]


def test_every_example_obeys_the_limits_and_its_label_is_its_value(small):
    rows = [r for s in ("train", "val", "test") for r in read_listops(small / f"basic_{s}.tsv")]
    assert len({src for src, _ in rows}) == len(rows)  # no duplicates, across splits too
    for source, label in rows:
        node = to_nodes(parse_pairs(source.split()))
        deepest, fewest, most = depth_and_args(node)
        assert deepest <= SMALL["max_depth"] and 2 <= fewest and most <= SMALL["max_args"]
        assert SMALL["min_len"] < length(node) < SMALL["max_len"]
        assert label == value(node)
        assert evaluate(source) == label


def test_same_seed_same_files_other_seed_other_files(small, tmp_path):
    again = generate_listops(tmp_path / "a", seed=3, n_train=300, n_val=40, n_test=60, **SMALL)
    for split in ("train", "val", "test"):
        assert (again / f"basic_{split}.tsv").read_bytes() == (small / f"basic_{split}.tsv").read_bytes()
    other = generate_listops(tmp_path / "b", seed=4, n_train=300, n_val=40, n_test=60, **SMALL)
    assert (other / "basic_train.tsv").read_bytes() != (small / "basic_train.tsv").read_bytes()


def test_lra_defaults_give_lengths_between_500_and_2000(tmp_path):
    folder = generate_listops(tmp_path, seed=0, n_train=30, n_val=5, n_test=5, progress=False)
    rows = read_listops(folder / "basic_train.tsv")
    for source, label in rows:
        node = to_nodes(parse_pairs(source.split()))
        assert 500 < length(node) < 2000 and depth_and_args(node)[0] <= 10 and depth_and_args(node)[2] <= 10
        assert value(node) == label


def test_class_balance_is_sane(tmp_path):
    folder = generate_listops(tmp_path, seed=1, n_train=0, n_val=0, n_test=600, **SMALL)
    counts = Counter(label for _, label in read_listops(folder / "basic_test.tsv"))
    assert set(counts) == set(range(10))
    assert max(counts.values()) < 0.35 * 600  # LRA's own data is skewed towards 0 and 9, but not degenerate


def test_never_overwrites_and_refuses_impossible_settings(tmp_path):
    folder = tmp_path / "listops-1000"
    folder.mkdir()
    (folder / "basic_val.tsv").write_text("mine")
    with pytest.raises(UserError, match=r"basic_val.tsv already exists"):
        generate_listops(tmp_path, n_train=5, n_val=5, n_test=5, **SMALL)
    assert (folder / "basic_val.tsv").read_text() == "mine"
    assert sorted(p.name for p in folder.iterdir()) == ["basic_val.tsv"]  # no leftovers
    with pytest.raises(UserError, match="widen the range"):
        generate_listops(tmp_path / "x", min_len=200, max_len=100, progress=False)
    with pytest.raises(UserError, match="widen the range"):
        generate_listops(tmp_path / "x", min_len=600, max_len=2000, max_depth=3, max_args=5, progress=False)
    with pytest.raises(UserError, match="max_depth >= 2"):
        generate_listops(tmp_path / "x", max_depth=1, progress=False)
    assert not (tmp_path / "x").exists()


def test_the_longest_tree_the_limits_allow_may_be_kept(tmp_path):
    # depth 2, two arguments: every operator tree is `[OP d d ]`, 4 tokens, and 3 < 4 < 5 keeps it
    folder = generate_listops(tmp_path, n_train=5, n_val=2, n_test=2, min_len=3, max_len=5, max_depth=2, max_args=2,
                              progress=False)
    lines = (folder / "basic_train.tsv").read_text().splitlines()[1:]
    assert len(lines) == 5 and all(len(encode(line.split("\t")[0])) == 4 for line in lines)


def test_fewer_distinct_trees_than_asked_for_is_refused_not_an_endless_loop(tmp_path):
    # 4 operators x 10 x 10 digits: 400 distinct trees of 4 tokens, and 1010 asked for
    with pytest.raises(UserError, match=r"only about 400 distinct trees, fewer than the 1010 examples.*ask for fewer"):
        generate_listops(tmp_path, n_train=1000, n_val=5, n_test=5, min_len=2, max_len=5, max_depth=2, max_args=2,
                         progress=False)
    assert not any((tmp_path / "listops-1000").glob("*"))  # no partial files


# ---- loader ---------------------------------------------------------------------------------------

def test_loader_errors_name_the_file(tmp_path):
    missing = tmp_path / "basic_train.tsv"
    with pytest.raises(UserError, match=r"ListOps file not found: .*basic_train.tsv"):
        read_listops(missing)
    header = tmp_path / "header.tsv"
    header.write_text("src\tlabel\n( [MAX 1 ) ]\t1\n")
    with pytest.raises(UserError, match=r"header.tsv is not a ListOps TSV"):
        read_listops(header)
    bad = tmp_path / "bad.tsv"
    bad.write_text("Source\tTarget\n( ( [MAX 1 ) 2 ) ] )\t2\n( ( [MAX 1 ) 2 ) ] )\tseven\n")
    with pytest.raises(UserError, match=r"bad.tsv line 3"):
        read_listops(bad)
    notab = tmp_path / "notab.tsv"
    notab.write_text("Source\tTarget\n( ( [MAX 1 ) 2 ) ] ) 2\n")
    with pytest.raises(UserError, match=r"notab.tsv line 2"):
        read_listops(notab)
    empty = tmp_path / "empty.tsv"
    empty.write_text("Source\tTarget\n")
    with pytest.raises(UserError, match=r"empty.tsv holds no examples"):
        read_listops(empty)
    garbled = tmp_path / "garbled.tsv"
    garbled.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(UserError, match=r"garbled.tsv"):
        read_listops(garbled)


def test_loader_reads_lf_files_too(tmp_path):
    path = tmp_path / "lf.tsv"
    path.write_text("Source\tTarget\n( ( ( [SM 7 ) 5 ) ] )\t2\n")
    assert read_listops(path) == [("( ( ( [SM 7 ) 5 ) ] )", 2)]


# ---- tokens, values, subtrees ------------------------------------------------------------------

def test_vocab_and_encode():
    assert len(VOCAB) == 15 and len(set(VOCAB)) == 15
    ids = encode("( ( ( [MAX 2 ) 9 ) ] )")
    assert ids == [VOCAB.index(t) + 1 for t in ["[MAX", "2", "9", "]"]]
    assert encode("[MAX 2 9 ]") == ids  # the bare format (DLR's) reads the same
    assert min(encode(" ".join(VOCAB))) == 1
    with pytest.raises(ValueError, match=r"unknown ListOps token '\[FIRST'"):
        encode("[FIRST 1 2 ]")
    with pytest.raises(UserError):
        encode("[MAX 1 x ]")


@pytest.mark.parametrize("text", ["[MAX 2 9 ]", "[MIN 4 3 8 ]", "[MED 1 2 ]", "[MED 2 3 4 5 ]", "[MED 9 0 9 ]",
                                  "[SM 9 9 9 ]", "[MAX [MIN 3 [SM 5 7 ] ] [MED 1 8 ] 0 ]", "7"])
def test_evaluate_matches_a_recursive_reference(text):
    tokens = text.split()

    def parse(i):
        if tokens[i] in OPS:
            op, children, i = tokens[i], [], i + 1
            while tokens[i] != "]":
                child, i = parse(i)
                children.append(child)
            return (op, children), i + 1
        return int(tokens[i]), i + 1
    assert evaluate(text) == value(parse(0)[0])


def test_evaluate_refuses_broken_expressions():
    for text in ["[MAX 1 2", "[MAX ]", "1 2", "]"]:
        with pytest.raises(ValueError):
            evaluate(text)


def test_subtree_labels_are_the_values_of_the_subtrees_each_bracket_closes(small):
    for source, label in read_listops(small / "basic_test.tsv")[:20]:
        node = to_nodes(parse_pairs(source.split()))
        expected = subtree_labels(node)
        ids, labels = subtree_targets(source)
        assert ids == [VOCAB.index(t) + 1 for t in bare_tokens(node)]
        assert labels == expected and labels[-1] == label
