"""Replacing an output on an object store, where nothing can be renamed.

On a local disk a finished replacement is swapped in by two renames (see
:func:`convpipe.outputs.swap_into_place`). On an object store a "move" is a
copy and a delete per object, and it can stop anywhere. So the swap is
journalled: the object ``OUTPUT.convpipe-swap`` is written before anything
is touched and removed after the last step, and every step in between can be
repeated by the next run that finds it.
"""

from __future__ import annotations

from collections.abc import Callable

from convpipe.paths import StorageOptions, filesystem, path_exists, remove_path

JOURNAL_SUFFIX = ".convpipe-swap"
METADATA_NAMES = ("zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata")


def journal_path(final: str) -> str:
    """The journal object of a swap into ``final``: beside it, like the lock and the staging copy."""
    return f"{final.rstrip('/')}{JOURNAL_SUFFIX}"


def swap_by_copy(staged: str, final: str, storage_options: StorageOptions | None = None) -> None:
    """Replace ``final`` by the whole output ``staged``: write the journal, then :func:`_finish`."""
    fs, journal = filesystem(journal_path(final), storage_options)
    fs.pipe_file(journal, f"replacing {final} by {staged}\n".encode())
    _finish(staged, final, storage_options)


def recover_swap_by_copy(
    staged: str, final: str, is_whole: Callable[[str], bool], storage_options: StorageOptions | None = None
) -> str | None:
    """Finish a journalled swap that was interrupted; say what was done (None: no swap was under way).

    A staging copy that is still whole is copied again; when the new output
    is whole already, what is left of the staging copy is removed.
    """
    if not path_exists(journal_path(final), storage_options):
        return None
    if path_exists(staged, storage_options) and is_whole(staged):
        _finish(staged, final, storage_options)
        return f"finished an interrupted replacement of {final}: the new output is in place"
    if is_whole(final):
        remove_path(staged, storage_options)
        remove_path(journal_path(final), storage_options)
        return f"removed the rest of {staged}, left by an interrupted replacement of {final}"
    # Not reachable by the steps of a swap: a store changed by hand.
    remove_path(journal_path(final), storage_options)
    return (
        f"an interrupted replacement of {final} left neither it nor {staged} whole; "
        "finish it with --resume, or start again with --overwrite"
    )


def _finish(staged: str, final: str, storage_options: StorageOptions | None) -> None:
    """Delete the old output, copy ``staged`` over it, delete ``staged``, then the journal.

    The Zarr metadata is copied after the data, deepest first: the root
    group's ``zarr.json``, which makes the output visible to readers, comes
    once every chunk is there.
    """
    remove_path(final, storage_options)
    fs, source = filesystem(staged, storage_options)
    target = filesystem(final, storage_options)[1]
    objects = sorted(fs.find(source))
    metadata = [name for name in objects if name.rsplit("/", 1)[-1] in METADATA_NAMES]
    data = [name for name in objects if name not in metadata]
    metadata.sort(key=lambda name: -name.count("/"))
    for batch in (data, metadata):
        if batch:
            fs.copy(batch, [target + name[len(source) :] for name in batch])
    remove_path(staged, storage_options)
    remove_path(journal_path(final), storage_options)
