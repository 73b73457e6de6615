"""The LRA tasks and DLR's two token-level tasks: what each reads and predicts.

=========================  ==========  =======  =======================  ==================================
task                       input       classes  output                   release layout under ``data.root``
=========================  ==========  =======  =======================  ==================================
listops                    tokens      10       one label                ``listops-1000/basic_{train,val,test}.tsv``
text                       bytes       2        one label                ``aclImdb/{train,test}/{pos,neg}/*.txt``
retrieval                  bytes x 2   2        one label per pair       ``new_aan_pairs.{train,eval,test}.tsv``
image                      pixels      10       one label                CIFAR-10 python batches (grey, 1,024 px)
mnist                      pixels      10       one label                MNIST-5k (sequential, 784 px)
pathfinder                 pixels      2        one label                ``pathfinder{size}/curv_contour_length_14``
pathx                      pixels      2        one label                ``pathfinder128/curv_contour_length_14``
listops_subtrees           tokens      10       a label per ``]``        as listops
pathfinder_segmentation    pixels      3        a label per pixel        as pathfinder, with ``masks/``
=========================  ==========  =======  =======================  ==================================

PathfinderSegmentation's three pixel classes are DLR's: 2 on the path joining the two circles, 1 on
the other long paths, 0 elsewhere (:func:`apps.lra.pathfinder.segmentation_target`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    """One task: ``input`` is ``tokens``, ``bytes`` or ``pixels``; ``output`` is ``sequence`` (one label),
    ``pair`` (one label per document pair) or ``token`` (a label per position, -100 where none);
    ``max_len`` the default truncation (None: the full image); ``title`` the column of the LRA table."""

    input: str
    n_classes: int
    output: str
    max_len: int | None
    title: str


TASKS: dict[str, Task] = {
    "listops": Task("tokens", 10, "sequence", 2000, "ListOps"),
    "text": Task("bytes", 2, "sequence", 4096, "Text"),
    "retrieval": Task("bytes", 2, "pair", 4000, "Retrieval"),
    "image": Task("pixels", 10, "sequence", None, "Image"),
    "mnist": Task("pixels", 10, "sequence", None, "sMNIST-5k"),
    "pathfinder": Task("pixels", 2, "sequence", None, "Pathfinder"),
    "pathx": Task("pixels", 2, "sequence", None, "Path-X"),
    "listops_subtrees": Task("tokens", 10, "token", 2000, "ListOpsSubTrees"),
    "pathfinder_segmentation": Task("pixels", 3, "token", None, "PathfinderSegmentation"),
}

#: byte-level tasks: ids are byte + 1 (1..256), 0 is padding
BYTE_VOCAB = 257


def task_info(name: str) -> Task:
    """The :class:`Task` called ``name``; a ValueError naming ``data.task`` otherwise."""
    if name not in TASKS:
        raise ValueError(f"data.task: unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name]


def vocab_size(name: str) -> int | None:
    """Token vocabulary of a task with padding id 0 included; None for pixel tasks."""
    task = task_info(name)
    if task.input == "bytes":
        return BYTE_VOCAB
    if task.input == "tokens":
        from apps.lra.listops import VOCAB

        values = VOCAB.values() if isinstance(VOCAB, dict) else range(1, len(VOCAB) + 1)
        return max(values) + 1
    return None
