"""Model families: candidate teachers grouped into lines of one model (ChatGPT 0301/0613/1106), and
which candidates are in play for one ranking (``--exclude``).

Versions of one model line write nearly alike, and a student's public record rarely says which version
taught it, so an auditor's first question is the *family*. :class:`Hierarchy` turns a model's
per-teacher log-probabilities into per-family ones and back:

- a family's probability for one output is the **mean** of its versions' probabilities (renormalized
  over the candidates in play), so a family of three near-identical versions gets no more prior mass
  than a family of one (the classifier's classes are balanced per version);
- over a student's outputs, family probabilities are combined like teacher probabilities (renormalized
  geometric mean), and a version's probability is its family's times its share within the family
  (the renormalized geometric mean of the family's versions): versions of one family sum to the family.

Without families every teacher is its own family and all of this reduces to the per-teacher ranking.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from scipy.special import logsumexp

from .errors import input_error, model_error


class Hierarchy:
    """Teachers, their families, and the candidates left after excluding some.

    Parameters
    ----------
    classes : sequence of str
        The model's teachers (columns of its probabilities).
    family_of : mapping of str to str, optional
        Each teacher's family; a teacher not in it is a family of its own.
    exclude : iterable of str
        Teachers or families left out of this ranking (``--exclude``); unknown names raise E230.

    Attributes
    ----------
    active : ndarray of int
        Columns of the teachers in play, in ``classes`` order.
    families : list of str
        Families in play, sorted.
    members : dict of str to ndarray of int
        Columns of each family's teachers in play.
    """

    def __init__(self, classes: Sequence[str], family_of: Mapping[str, str] | None = None,
                 exclude: Iterable[str] = ()) -> None:
        self.classes = [str(c) for c in classes]
        self.family_of = {c: str((family_of or {}).get(c, c)) for c in self.classes}
        self.all_families = sorted(set(self.family_of.values()))
        self.excluded = sorted({str(name) for name in exclude})
        unknown = [n for n in self.excluded if n not in self.family_of and n not in self.all_families]
        if unknown:
            raise model_error("E230", names=", ".join(unknown),
                              known=", ".join(sorted(set(self.classes) | set(self.all_families))))
        drop = set(self.excluded)
        self.active = np.asarray([i for i, c in enumerate(self.classes)
                                  if c not in drop and self.family_of[c] not in drop], dtype=np.int64)
        if len(self.active) < 2:
            raise model_error("E231", n=len(self.active), excluded=", ".join(self.excluded))
        self.families = sorted({self.family_of[self.classes[i]] for i in self.active})
        self.members = {f: np.asarray([i for i in self.active if self.family_of[self.classes[i]] == f],
                                      dtype=np.int64) for f in self.families}
        weights = np.zeros((len(self.families), len(self.classes)))
        for row, family in enumerate(self.families):
            weights[row, self.members[family]] = 1.0 / len(self.members[family])
        #: (n_families, n_classes): each family's answer as the mean of its versions' (paired scores)
        self.family_weights = weights

    @property
    def grouped(self) -> bool:
        """Whether some family is more than one teacher or is named apart from its teacher."""
        return any(self.family_of[c] != c for c in self.classes)

    @property
    def trivial(self) -> bool:
        """No families and nothing excluded: rankings and tests are the per-teacher ones, unchanged."""
        return not self.grouped and not self.excluded

    def active_classes(self) -> list[str]:
        return [self.classes[i] for i in self.active]

    def family_log_proba(self, log_proba: np.ndarray) -> np.ndarray:
        """Per-output log-probability of each family in play: the mean of its versions' probabilities,
        renormalized over the families in play. ``log_proba``: (n, n_classes)."""
        log_proba = np.asarray(log_proba, dtype=float)
        out = np.stack([logsumexp(log_proba[:, self.members[f]], axis=1) - np.log(len(self.members[f]))
                        for f in self.families], axis=1)
        return out - logsumexp(out, axis=1, keepdims=True)

    def version_log_proba(self, log_proba: np.ndarray, family: str) -> np.ndarray:
        """Per-output log-probability of each version of ``family`` in play, renormalized within the family
        (columns: ``members[family]``); ``log_proba``: (..., n_classes)."""
        within = np.asarray(log_proba, dtype=float)[..., self.members[family]]
        return within - logsumexp(within, axis=-1, keepdims=True)

    def multi_version_families(self) -> list[str]:
        """The families in play with more than one version (the ones a verdict may split)."""
        return [f for f in self.families if len(self.members[f]) > 1]


def read_families(path: str | os.PathLike) -> dict[str, str]:
    """Teacher -> family from a tab-separated file with a header naming ``teacher`` and ``family``
    columns (other columns, e.g. ``provider``, are ignored): the layout of the bank's ``candidates.tsv``."""
    source = str(path)
    try:
        handle = open(path, encoding="utf-8", newline="")
    except OSError as exc:
        raise input_error("E140", source=source, line=0, detail=exc.strerror or str(exc)) from None
    families: dict[str, str] = {}
    with handle:
        try:
            reader = csv.reader(handle, delimiter="\t")
            header = next(reader, None)
            if header is None or "teacher" not in header or "family" not in header:
                raise input_error("E140", source=source, line=1,
                                  detail="the header must name a 'teacher' and a 'family' column")
            t_col, f_col = header.index("teacher"), header.index("family")
            for line, row in enumerate(reader, start=2):
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) <= max(t_col, f_col) or not row[t_col].strip() or not row[f_col].strip():
                    raise input_error("E140", source=source, line=line, detail="a row needs a teacher and a family")
                teacher, family = row[t_col].strip(), row[f_col].strip()
                if families.get(teacher, family) != family:
                    raise input_error("E141", source=source, line=line, teacher=teacher,
                                      first=families[teacher], second=family)
                families[teacher] = family
        except UnicodeDecodeError:
            raise input_error("E140", source=source, line=0, detail="not UTF-8 text") from None
    return families


__all__ = ["Hierarchy", "read_families"]
