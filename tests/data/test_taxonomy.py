"""Taxonomic distance on a hand-made tree.

life
├── plants
│   └── trees: oak, pine
└── animals
    ├── birds: robin, wren
    └── fish: cod
"""

from __future__ import annotations

import numpy as np

from t2v_ray.data.library import TaskSpec
from t2v_ray.data.taxonomy import class_taxonomic_distance, taxonomic_distance, taxonomy_matrix

TREES = ["life", "plants", "trees"]
BIRDS = ["life", "animals", "birds"]
FISH = ["life", "animals", "fish"]
ANIMALS = ["life", "animals"]


def test_tree_distance_between_nodes():
    assert taxonomic_distance(BIRDS, BIRDS) == 0
    assert taxonomic_distance(BIRDS, FISH) == 2  # siblings: up one, down one
    assert taxonomic_distance(BIRDS, TREES) == 4  # via the root
    assert taxonomic_distance(ANIMALS, BIRDS) == 1  # parent and child
    assert taxonomic_distance(["life"], TREES) == 2


def test_class_level_distance_is_the_min_over_class_pairs():
    # birds' classes are robin, wren; fish's is cod: any pair is cousin-level, 4 edges apart.
    assert class_taxonomic_distance(BIRDS, ["robin", "wren"], FISH, ["cod"]) == 4
    # The animals task's class "birds" (life/animals/birds) is the parent of class life/animals/birds/robin.
    assert class_taxonomic_distance(ANIMALS, ["birds", "fish"], BIRDS, ["robin", "wren"]) == 1
    assert class_taxonomic_distance(BIRDS, ["robin", "wren"], BIRDS, ["robin", "wren"]) == 0


def test_taxonomy_matrix_on_task_specs():
    def task(path, classes):
        return TaskSpec("/".join(path), "toy", "taxonomy", path, classes)

    tasks = [task(BIRDS, ["robin", "wren"]), task(FISH, ["cod", "eel"]), task(TREES, ["oak", "pine"])]
    np.testing.assert_array_equal(taxonomy_matrix(tasks), [[0, 2, 4], [2, 0, 4], [4, 4, 0]])
    np.testing.assert_array_equal(taxonomy_matrix(tasks, level="class"), [[0, 4, 6], [4, 0, 6], [6, 6, 0]])
    np.testing.assert_array_equal(taxonomy_matrix([BIRDS, ANIMALS]), [[0, 1], [1, 0]])
