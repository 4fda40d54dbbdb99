#!/usr/bin/env python3
"""Instructions per cycle by function, from the file instruction_count.c writes to
$INSTRUCTION_PROFILE.

    python3 instruction_profile.py PROFILE CYCLES [TOP]

Each block's executions times its instructions are charged to the function whose symbol
precedes the block's address in its file (symbols from nm, names demangled by
`swift demangle` and c++filt). Libraries stripped to their dynamic symbols (Debian's libc) charge their
internal functions to the exported symbol before them: read those rows as "somewhere in libc".
"""
import bisect
import collections
import subprocess
import sys


def read_profile(path):
    blocks, maps, in_maps = [], [], False
    with open(path) as profile:
        for line in profile:
            if line.startswith("MAPS"):
                in_maps = True
            elif not in_maps:
                address, instructions, executions = line.split()
                blocks.append((int(address, 16), int(instructions) * int(executions)))
            else:
                fields = line.split()
                if len(fields) >= 6 and fields[5].startswith("/"):
                    start, end = (int(value, 16) for value in fields[0].split("-"))
                    maps.append((start, end, int(fields[2], 16), fields[5]))
    maps.sort()
    return blocks, maps


class ObjectFile:
    """A mapped file's loadable segments and function symbols."""

    def __init__(self, path):
        self.segments = []
        for fields in (line.split() for line in run(["readelf", "-lW", path]).splitlines()):
            if fields and fields[0] == "LOAD":
                self.segments.append((int(fields[1], 16), int(fields[2], 16), int(fields[4], 16)))
        symbols = self.symbols(["nm", "-n", "--defined-only", path]) or self.symbols(["nm", "-n", "-D", "--defined-only", path])
        self.addresses = [address for address, _ in symbols]
        self.names = [name for _, name in symbols]

    @staticmethod
    def symbols(command):
        found = []
        for fields in (line.split() for line in run(command).splitlines()):
            if len(fields) == 3 and fields[1] in "tTwWiI":
                found.append((int(fields[0], 16), fields[2]))
        return found

    def function(self, offset):
        address = offset
        for file_offset, virtual_address, size in self.segments:
            if file_offset <= offset < file_offset + size:
                address = offset - file_offset + virtual_address
        index = bisect.bisect_right(self.addresses, address) - 1
        return self.names[index] if index >= 0 else "?"


def run(command, text_input=None):
    return subprocess.run(command, input=text_input, capture_output=True, text=True).stdout


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    blocks, maps = read_profile(sys.argv[1])
    cycles = float(sys.argv[2])
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 40
    starts = [start for start, _, _, _ in maps]
    files, by_function, by_file, total = {}, collections.Counter(), collections.Counter(), 0
    for address, instructions in blocks:
        total += instructions
        index = bisect.bisect_right(starts, address) - 1
        if index < 0 or address >= maps[index][1]:
            by_function[("?", "?")] += instructions
            continue
        start, _, file_offset, path = maps[index]
        if path not in files:
            files[path] = ObjectFile(path)
        name = path.rsplit("/", 1)[-1]
        by_function[(name, files[path].function(address - start + file_offset))] += instructions
        by_file[name] += instructions
    print(f"{total / cycles:.0f} instructions per cycle")
    print()
    for name, instructions in by_file.most_common():
        if instructions < cycles:
            continue
        print(f"{instructions / cycles:9.0f}  {name}")
    print()
    rows = by_function.most_common(top)
    # Swift names through `swift demangle`, C++ ones (the Swift runtime's) through c++filt.
    swift = run(["swift", "demangle", "--simplified"], "\n".join(symbol for (_, symbol), _ in rows))
    demangled = run(["c++filt"], swift).splitlines()
    for ((name, _), instructions), function in zip(rows, demangled):
        print(f"{instructions / cycles:9.0f}  {name[:26]:26}  {function[:140]}")


if __name__ == "__main__":
    main()
