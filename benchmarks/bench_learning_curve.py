"""How attribution accuracy grows with the number of reference outputs per teacher.

The released copy holds only ~90 reference outputs per teacher and task. This fits the
default model on random subsets of them (25%, 50%, 75%, 100% per teacher; several draws)
and scores the students each time, the paper's protocol. It also reports the *teacher*
ceiling: balanced accuracy of 5-fold cross-validation on the references themselves (how well
the teachers can be told apart from each other at all with this much data).

    python benchmarks/bench_learning_curve.py [--data-dir ../shared/data/paper_qa] [--features combined]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedKFold

from attribution.evaluation import score_attribution, student_key
from attribution.io import read_records
from attribution.models import TeacherAttributor

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "paper_qa"


def subset(teachers: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Row indices of a random ``fraction`` of each teacher's references (at least 2 each)."""
    picks = [rng.permutation(np.flatnonzero(teachers == t))[:max(2, round(fraction * np.sum(teachers == t)))]
             for t in np.unique(teachers)]
    return np.sort(np.concatenate(picks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--features", default="combined")
    parser.add_argument("--draws", type=int, default=5, help="random subsets per fraction below 100%%")
    args = parser.parse_args()
    print(f"features: {args.features}; {args.draws} draws per fraction; mean over draws")
    for ref_path in sorted(args.data_dir.glob("*_teacher.jsonl")):
        refs = read_records(ref_path, require_teacher=True, skip_invalid=True)
        students = read_records(Path(str(ref_path).replace("_teacher", "_student")), skip_invalid=True)
        model = TeacherAttributor(features=args.features, open_set=False, n_bootstrap=0)
        ref_docs = model.prepare([r.output for r in refs])
        stud_docs = model.prepare([r.output for r in students])
        teachers = np.asarray([r.teacher for r in refs])
        y_true = [r.teacher for r in students]
        groups = [student_key(r) for r in students]
        evidence = [len(doc) > 0 for doc in stud_docs]
        task = ref_path.name.replace("_teacher.jsonl", "")
        rng = np.random.default_rng(0)
        for fraction in (0.25, 0.5, 0.75, 1.0):
            results = []
            for _ in range(args.draws if fraction < 1 else 1):
                rows = subset(teachers, fraction, rng)
                model.fit_docs([ref_docs[i] for i in rows], teachers[rows].tolist())
                scores = np.log(model.predict_proba_docs(stud_docs))
                results.append(score_attribution(y_true, scores, model.classes_, groups, features=args.features,
                                                 evidence=evidence))
            per_teacher = len(rows) / len(np.unique(teachers))
            print(f"{task:14s} {fraction:4.0%} of references (~{per_teacher:.0f} per teacher): "
                  f"balanced accuracy {np.mean([r['balanced_accuracy'] for r in results]):.3f}, "
                  f"students right {np.mean([r['student_accuracy'] for r in results]) * results[0]['n_students']:.1f}"
                  f"/{results[0]['n_students']}")
        predicted = np.empty(len(teachers), dtype=object)
        for train, test in StratifiedKFold(5, shuffle=True, random_state=0).split(teachers, teachers):
            model.fit_docs([ref_docs[i] for i in train], teachers[train].tolist())
            predicted[test] = model.classes_[np.argmax(model.predict_proba_docs([ref_docs[i] for i in test]), axis=1)]
        recall = [np.mean(predicted[teachers == t] == t) for t in np.unique(teachers)]
        print(f"{task:14s} teachers told apart from each other (5-fold CV on the references): "
              f"balanced accuracy {np.mean(recall):.3f}")


if __name__ == "__main__":
    main()
