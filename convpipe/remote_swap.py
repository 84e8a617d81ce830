"""Replacing an output on an object store, where nothing can be renamed.

On a local disk a finished replacement is swapped in by two renames (see
:func:`convpipe.outputs.swap_into_place`). Object stores (S3 and the like)
have no rename: a "move" is a copy and a delete per object, and it can stop
anywhere. So the swap is journalled: a small object ``OUTPUT.convpipe-swap``
is written before anything is touched and removed after the last step, and
every step can be repeated:

1. write the journal (the staging copy is whole: every block recorded);
2. delete the old output;
3. copy the staging copy over, data objects first and the Zarr metadata
   last, so the output appears to readers only once every chunk is there;
4. delete the staging copy, then the journal.

A run that finds the journal (the previous one was killed midway) finishes
the swap when the staging copy is still whole, or removes what is left of
the staging copy when the new output is already whole.
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
    """Replace ``final`` by the whole output ``staged`` (steps 1-4 above)."""
    fs, journal = filesystem(journal_path(final), storage_options)
    fs.pipe_file(journal, f"replacing {final} by {staged}\n".encode())
    _finish(staged, final, storage_options)


def recover_swap_by_copy(
    staged: str, final: str, is_whole: Callable[[str], bool], storage_options: StorageOptions | None = None
) -> str | None:
    """Finish a journalled swap that was interrupted; say what was done (None: no swap was under way)."""
    if not path_exists(journal_path(final), storage_options):
        return None
    if path_exists(staged, storage_options) and is_whole(staged):
        _finish(staged, final, storage_options)
        return f"finished an interrupted replacement of {final}: the new output is in place"
    if is_whole(final):
        remove_path(staged, storage_options)
        remove_path(journal_path(final), storage_options)
        return f"removed the rest of {staged}, left by an interrupted replacement of {final}"
    remove_path(journal_path(final), storage_options)  # not reachable by the steps above: a store changed by hand
    return (
        f"an interrupted replacement of {final} left neither it nor {staged} whole; "
        "finish it with --resume, or start again with --overwrite"
    )


def _finish(staged: str, final: str, storage_options: StorageOptions | None) -> None:
    """Steps 2-4: each may be repeated after an interruption."""
    remove_path(final, storage_options)
    fs, source = filesystem(staged, storage_options)
    target = filesystem(final, storage_options)[1]
    objects = sorted(fs.find(source))
    is_metadata = [name.rsplit("/", 1)[-1] in METADATA_NAMES for name in objects]
    data = [name for name, meta in zip(objects, is_metadata) if not meta]
    # Deepest metadata first: the root group's zarr.json, which makes the output visible, comes last.
    metadata = sorted((name for name, meta in zip(objects, is_metadata) if meta), key=lambda n: -n.count("/"))
    for batch in (data, metadata):
        if batch:
            fs.copy(batch, [target + name[len(source) :] for name in batch])
    remove_path(staged, storage_options)
    remove_path(journal_path(final), storage_options)
