# Reads the output of `cargo test --no-fail-fast` and prints one line per test file (tests
# passed and failed, time), the names of failed tests, and the totals. A file that started
# but printed no result crashed; no file at all means the build failed.
#
# Generated projects' own `cargo test` output can appear inside a failed test's captured
# stdout (quoted behind `│ ` by the suite's helpers), so results are read only from the
# runner's own lines: `test x ... FAILED` before the file's `failures:` section, and the
# file's last `test result:` line.

function start(name) {
    files[++count] = name
    reading = 1
}

/^ +Running / { start($2 == "unittests" ? $3 : $2); next }
/^ +Doc-tests / { start("doc-tests " $2); next }
/^failures:$/ { reading = 0; next }
reading && /^test .* \.\.\. FAILED$/ {
    name = $0; sub(/^test /, "", name); sub(/ \.\.\. FAILED$/, "", name)
    failed_names[count] = failed_names[count] "      " name "\n"
    next
}
/^test result: / {
    passed[count] = $4 + 0; failed[count] = $6 + 0; ignored[count] = $8 + 0
    took[count] = $NF; sub(/s$/, "", took[count])
    done[count] = 1
}

END {
    tests = 0; failures = 0; crashed = 0
    print ""
    print "== test summary =="
    for (i = 1; i <= count; i++) {
        if (!done[i]) {
            crashed++
            printf "  CRASHED %-40s no result (killed, or a panic outside a test)\n", files[i]
            continue
        }
        tests += passed[i] + failed[i]; failures += failed[i]
        counts = passed[i] " passed" (failed[i] ? ", " failed[i] " failed" : "") \
                 (ignored[i] ? ", " ignored[i] " ignored" : "")
        printf "  %-7s %-40s %-26s %8.1f s\n", (failed[i] ? "FAILED" : "ok"), files[i], counts, took[i]
        printf "%s", failed_names[i]
    }
    if (count == 0) print "  no test file ran: the build failed (see above)"
    printf "%d test files, %d tests, %d failed, %d crashed, %d min %d s; log: %s\n",
        count, tests, failures, crashed, int(seconds / 60), seconds % 60, logfile
    if (status != 0 && failures == 0 && crashed == 0 && count > 0)
        print "cargo test exited " status ": see the log"
}
