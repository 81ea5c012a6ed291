#!/usr/bin/python3
"""Ansible module: root's edit of a file in another user's tree, with no window for a symlink swap.

A check (stat, realpath) followed by lineinfile or copy leaves a window: the directory's owner can swap the
file, or a folder on its path, for a symlink between the check and the write, and root then reads or writes
wherever it points. Here every step goes through file descriptors: each folder of the path is opened
relative to the one before with O_NOFOLLOW, the file is opened with O_NOFOLLOW and checked on its descriptor
(a plain file with one link), the new text goes to a fresh temporary file in the same folder (O_EXCL), gets
the old file's owner and mode, and is renamed over the name through the folder's descriptor. A symlink met
anywhere is refused; one swapped in later is replaced, never followed.

Two kinds of edit: `key` sets the first `KEY=...` line (appended when missing; the file must exist), or
`content` is the whole file (created when missing, owned by the folder's owner, with `mode`).
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from typing import NamedTuple

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: collector_safe_file
short_description: Set a KEY=value line in, or the whole content of, a file without following symlinks.
options:
  path: {description: The file (absolute)., type: str, required: true}
  key: {description: Set the first line starting KEY= to KEY=value (with value)., type: str}
  value: {description: The value for key., type: str}
  content: {description: The whole file; created when missing., type: str}
  mode: {description: Mode of a file this creates (octal string)., type: str, default: "0644"}
  show_diff: {description: Return the content's diff (key edits never do)., type: bool, default: false}
"""

O_PATH_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


class Refused(Exception):
    """The path cannot be edited safely (one line)."""


class Edit(NamedTuple):
    changed: bool
    before: str | None  # None: the file did not exist
    after: str


def open_folder(path: str) -> int:
    """The descriptor of the file's folder, each component opened below the last with O_NOFOLLOW."""
    if not os.path.isabs(path) or path.endswith("/"):
        raise Refused(f"refused: {path} is not an absolute path to a file")
    parts = [p for p in os.path.dirname(path).split("/") if p not in ("", ".")]
    if ".." in parts:
        raise Refused(f"refused: {path} contains '..'")
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts:
            try:
                child = os.open(part, O_PATH_FLAGS | os.O_DIRECTORY, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise Refused(
                        f"refused: {path} passes through a symlink or a non-folder ({part})"
                    ) from None
                raise Refused(f"refused: {path}: folder {part}: {exc.strerror}") from None
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_file(folder: int, name: str, path: str) -> tuple[str | None, os.stat_result | None]:
    """The file's text and its stat, through a descriptor opened without following a symlink."""
    try:
        fd = os.open(name, O_PATH_FLAGS, dir_fd=folder)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Refused(f"refused: {path} is a symlink") from None
        raise Refused(f"refused: {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Refused(f"refused: {path} is not a plain file")
        if info.st_nlink != 1:
            raise Refused(f"refused: {path} has {info.st_nlink} hard links")
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", errors="surrogateescape"), info
    finally:
        os.close(fd)


def set_key(text: str, key: str, value: str) -> str:
    """`text` with its first KEY= line set to KEY=value (appended when there is none)."""
    wanted = f"{key}={value}"
    if "\n" in wanted or "\r" in wanted:
        raise Refused(f"refused: the value for {key} spans lines")
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.startswith(f"{key}="):
            lines[i] = wanted + ("\n" if line.endswith("\n") else "")
            return "".join(lines)
    return text + ("" if not text or text.endswith("\n") else "\n") + wanted + "\n"


def key_line(text: str, key: str) -> str:
    """The first KEY= line of `text` ("" when there is none)."""
    return next((line for line in text.splitlines() if line.startswith(f"{key}=")), "")


def replace(folder: int, name: str, text: str, uid: int, gid: int, mode: int) -> None:
    """Write `text` to a fresh file beside `name` and rename it over `name`, all through `folder`."""
    temp = f".{name}.collector-{secrets.token_hex(6)}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_PATH_FLAGS, 0o600, dir_fd=folder)
    try:
        try:
            data = text.encode("utf-8", errors="surrogateescape")
            while data:
                data = data[os.write(fd, data) :]
            os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        try:
            os.unlink(temp, dir_fd=folder)
        except FileNotFoundError:
            pass
        raise
    os.fsync(folder)


def edit(
    path: str,
    *,
    key: str | None = None,
    value: str | None = None,
    content: str | None = None,
    mode: int = 0o644,
    check: bool = False,
) -> Edit:
    """Set `key`'s line, or the whole `content`, of `path`; with `check`, only say whether it would change."""
    if (key is None) == (content is None):
        raise Refused("give either key (with value) or content")
    name = os.path.basename(path)
    folder = open_folder(path)
    try:
        before, info = read_file(folder, name, path)
        if key is not None:
            if before is None:
                raise Refused(f"refused: {path} does not exist")
            after = set_key(before, key, value or "")
        else:
            after = str(content)
        if after == before:
            return Edit(False, before, after)
        if not check:
            if info is None:
                owner = os.fstat(folder)
                replace(folder, name, after, owner.st_uid, owner.st_gid, mode)
            else:
                replace(folder, name, after, info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode))
        return Edit(True, before, after)
    finally:
        os.close(folder)


def result_of(done: Edit, path: str, key: str | None, *, diff: bool) -> dict[str, object]:
    """What the module returns: never the file's text for a key edit (the file holds secrets), only the key's
    own line before; a content edit's diff when asked."""
    result: dict[str, object] = {"changed": done.changed, "path": path, "created": done.before is None}
    if key is not None:
        result["line_before"] = key_line(done.before or "", key)
    elif done.changed and diff:
        result["diff"] = {"before": done.before or "", "after": done.after, "before_header": path}
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "str", "required": True},
            "key": {"type": "str"},
            "value": {"type": "str"},
            "content": {"type": "str"},
            "mode": {"type": "str", "default": "0644"},
            "show_diff": {"type": "bool", "default": False},
        },
        mutually_exclusive=[("key", "content")],
        required_one_of=[("key", "content")],
        required_together=[("key", "value")],
        supports_check_mode=True,
    )
    p = module.params
    if not (p["mode"].isdigit() and set(p["mode"]) <= set("01234567")):
        module.fail_json(msg=f"mode must be octal digits such as 0644 (got {p['mode']})")
    try:
        done = edit(
            p["path"],
            key=p["key"],
            value=p["value"],
            content=p["content"],
            mode=int(p["mode"], 8),
            check=module.check_mode,
        )
    except Refused as exc:
        module.fail_json(msg=f"{exc}; nothing was changed")
    except OSError as exc:
        module.fail_json(msg=f"{p['path']}: {exc.strerror}; nothing was changed")
    module.exit_json(**result_of(done, p["path"], p["key"], diff=p["show_diff"] and module._diff))


if __name__ == "__main__":
    main()
