"""Cluster profiles: a named recipe for the cluster a job runs on.

A profile is one of

* ``{address: tls://host:8786, security: {ca: ca.pem, cert: me.pem, key: me.key}}``:
  a running scheduler, reached over TLS with these files;
* ``{local: {workers: 4, threads: 2, memory_limit: 4GiB}}``: a LocalCluster;
* ``{class: dask_jobqueue.SLURMCluster, kwargs: {...}, adapt: {minimum: 0, maximum: 20}}``:
  any cluster class, by import path, made with ``kwargs``.

Profiles are named under ``dbatch.clusters.<name>`` of ``dask.config`` (so
``DASK_DBATCH__CLUSTERS__HPC__CLASS=dask_jobqueue.SLURMCluster`` defines one), or
written inline in a job file's ``cluster:``. ``adapt`` lets dbatch scale the
cluster to the batches left, between its bounds.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.config

from ..errors import JobSpecError
from ..options import did_you_mean, refuse_unknown
from ..registry import Entry

__all__ = [
    "ClusterProfile",
    "PROFILE_KEYS",
    "named_profile",
    "profile_names",
    "parse_profile",
    "import_cluster_class",
    "CLUSTER_PACKAGES",
]

PROFILE_KEYS = ("address", "security", "local", "class", "kwargs", "adapt")
_KINDS = ("address", "local", "class")
_SECURITY_KEYS = {
    "ca": "the CA certificate file",
    "cert": "this client's certificate",
    "key": "its key",
}
_LOCAL_KEYS = ("workers", "threads", "memory_limit")
_ADAPT_KEYS = ("minimum", "maximum", "threads_per_worker")

#: Top-level module of a cluster class -> what to install for it.
CLUSTER_PACKAGES = {
    "dask_jobqueue": "dask-jobqueue",
    "dask_kubernetes": "dask-kubernetes",
    "dask_gateway": "dask-gateway",
    "coiled": "coiled",
    "dask_cloudprovider": "dask-cloudprovider",
    "dask_yarn": "dask-yarn",
    "dask_mpi": "dask-mpi",
}


@dataclass(frozen=True)
class ClusterProfile:
    """How to reach or start the cluster of a run (see the module's docstring)."""

    name: str
    address: str | None = None
    security: Mapping[str, str] = field(default_factory=dict)
    local: Mapping[str, Any] | None = None
    cls: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    minimum: int | None = None
    maximum: int | None = None
    threads_per_worker: int | None = None

    @property
    def kind(self) -> str:
        """``address``, ``local`` or ``class``."""
        return "address" if self.address else "local" if self.local is not None else "class"

    @property
    def adaptive(self) -> bool:
        """Whether dbatch scales the cluster to the batches left."""
        return self.maximum is not None

    def describe(self) -> str:
        """One line for logs: ``profile 'hpc' (dask_jobqueue.SLURMCluster, 0..20 workers)``."""
        what = self.address or ("LocalCluster" if self.local is not None else self.cls)
        bounds = f", {self.minimum}..{self.maximum} workers" if self.adaptive else ""
        return f"profile {self.name!r} ({what}{bounds})"


def profile_names() -> list[str]:
    """The names of the profiles under ``dbatch.clusters`` of ``dask.config``."""
    found = dask.config.get("dbatch.clusters", default=None) or {}
    return sorted(map(str, found)) if isinstance(found, Mapping) else []


def named_profile(name: str) -> ClusterProfile:
    """The profile ``dbatch.clusters.<name>`` of ``dask.config`` (environment included).

    Environment variables name it in upper case (``DASK_DBATCH__CLUSTERS__HPC__CLASS``)
    and dask lower-cases it; ``-`` and ``_`` are the same, as elsewhere in dask's config.
    """
    profiles = dask.config.get("dbatch.clusters", default=None) or {}
    wanted = _canonical(name)
    for key, value in profiles.items() if isinstance(profiles, Mapping) else ():
        if _canonical(str(key)) == wanted:
            return parse_profile(value, name=str(key), key=f"dbatch.clusters.{key}")
    known = profile_names()
    raise JobSpecError(
        f"no cluster profile {name!r}{did_you_mean([name], known)}; known: {known or 'none'}. "
        f"Define it under dbatch.clusters.{name} in a dask config file (~/.config/dask/*.yaml) "
        f"or with environment variables such as DASK_DBATCH__CLUSTERS__{name.upper()}__ADDRESS",
        key="cluster",
    )


def _canonical(name: str) -> str:
    return name.lower().replace("-", "_")


def parse_profile(
    value: Any,
    *,
    name: str,
    key: str,
    file: str | None = None,
    base_dir: Path | None = None,
) -> ClusterProfile:
    """A profile's mapping -> ``ClusterProfile``; file paths are taken from ``base_dir``.

    Examples
    --------
    >>> parse_profile({"local": {"workers": 2}}, name="small", key="cluster").kind
    'local'
    >>> parse_profile({"class": "distributed.LocalCluster", "adapt": {"maximum": 4}},
    ...               name="grow", key="cluster").describe()
    "profile 'grow' (distributed.LocalCluster, 0..4 workers)"
    """
    if not isinstance(value, Mapping):
        raise JobSpecError(
            "expected a mapping with one of address, local or class", key=key, file=file
        )
    refuse_unknown(value, PROFILE_KEYS, key=key, file=file)
    kinds = [k for k in _KINDS if k in value]
    if len(kinds) != 1:
        raise JobSpecError(
            f"a cluster profile has exactly one of address, local or class; got {kinds or 'none'}",
            key=key,
            file=file,
        )
    if "kwargs" in value and "class" not in value:
        raise JobSpecError("kwargs go with class: IMPORT.PATH", key=f"{key}.kwargs", file=file)
    if "adapt" in value and "address" in value:
        raise JobSpecError(
            "adapt needs a cluster dbatch starts (local or class); a running scheduler's "
            "workers are its owner's to scale",
            key=f"{key}.adapt",
            file=file,
        )
    minimum, maximum, per_worker = _adapt(value.get("adapt"), key=f"{key}.adapt", file=file)
    return ClusterProfile(
        name=name,
        address=_text(value.get("address"), key=f"{key}.address", file=file),
        security=_security(value.get("security"), key=f"{key}.security", file=file, base=base_dir),
        local=_local(value["local"], key=f"{key}.local", file=file) if "local" in value else None,
        cls=_text(value.get("class"), key=f"{key}.class", file=file),
        kwargs=_kwargs(value.get("kwargs"), key=f"{key}.kwargs", file=file),
        minimum=minimum,
        maximum=maximum,
        threads_per_worker=per_worker,
    )


def _text(value: Any, *, key: str, file: str | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise JobSpecError(f"expected a non-empty string, got {value!r}", key=key, file=file)
    return value.strip()


def _whole(value: Any, *, key: str, file: str | None, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise JobSpecError(
            f"expected a whole number of at least {least}, got {value!r}", key=key, file=file
        )
    return value


def _mapping(value: Any, *, key: str, file: str | None) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise JobSpecError(f"expected a mapping, got {value!r}", key=key, file=file)
    return {str(k).replace("-", "_"): v for k, v in value.items()}


def _security(value: Any, *, key: str, file: str | None, base: Path | None) -> dict[str, str]:
    found = _mapping(value, key=key, file=file)
    refuse_unknown(found, _SECURITY_KEYS, key=key, file=file)
    out = {}
    for name, path in found.items():
        text = _text(path, key=f"{key}.{name}", file=file)
        assert text is not None
        where = Path(text).expanduser()
        out[name] = str(where if base is None or where.is_absolute() else base / where)
    if out and "ca" not in out:
        raise JobSpecError(
            f"security needs ca ({_SECURITY_KEYS['ca']}) to check the scheduler's certificate",
            key=key,
            file=file,
        )
    return out


def _local(value: Any, *, key: str, file: str | None) -> dict[str, Any]:
    found = dict(_mapping(value, key=key, file=file))
    refuse_unknown(found, _LOCAL_KEYS, key=key, file=file)
    for name in ("workers", "threads"):
        if name in found:
            found[name] = _whole(found[name], key=f"{key}.{name}", file=file, least=1)
    return found


def _kwargs(value: Any, *, key: str, file: str | None) -> dict[str, Any]:
    return dict(_mapping(value, key=key, file=file))


def _adapt(value: Any, *, key: str, file: str | None) -> tuple[int | None, int | None, int | None]:
    if value is None:
        return None, None, None
    found = _mapping(value, key=key, file=file)
    refuse_unknown(found, _ADAPT_KEYS, key=key, file=file)
    if "maximum" not in found:
        raise JobSpecError("adapt needs maximum (the most workers)", key=key, file=file)
    maximum = _whole(found["maximum"], key=f"{key}.maximum", file=file, least=1)
    minimum = _whole(found.get("minimum", 0), key=f"{key}.minimum", file=file, least=0)
    if minimum > maximum:
        raise JobSpecError(
            f"minimum {minimum} is above maximum {maximum}", key=f"{key}.minimum", file=file
        )
    per = found.get("threads_per_worker")
    per = None if per is None else _whole(per, key=f"{key}.threads_per_worker", file=file, least=1)
    return minimum, maximum, per


def import_cluster_class(profile: ClusterProfile) -> type:
    """The class of a ``class:`` profile; a missing package gets its install line."""
    path = profile.cls or ""
    module_name, _, attr = path.replace(":", ".").rpartition(".")
    where = f"cluster profile {profile.name!r}: class {path!r}"
    if not module_name:
        raise JobSpecError(f"{where} is not an import path such as dask_jobqueue.SLURMCluster")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        missing = e.name or module_name
        top = missing.partition(".")[0]
        package = CLUSTER_PACKAGES.get(top, top)
        command = Entry(f"{module_name}:{attr}", packages=(package,)).install_command()
        raise JobSpecError(
            f"{where} needs the module {missing!r}, which cannot be imported ({e}); "
            f"install it with: {command}"
        ) from None
    found = getattr(module, attr, None)
    if not isinstance(found, type):
        clusters = [n for n in dir(module) if n.endswith("Cluster")]
        raise JobSpecError(
            f"{where}: module {module_name!r} has no class {attr!r}"
            f"{did_you_mean([attr], clusters)}; its clusters: {clusters or 'none'}"
        )
    return found
