# Sourced by farm_cases.sh and hierarchy_case.sh: a job of a diamond and a chain of
# dependencies, and the check that every dependent started only after its dependencies had
# finished (from the journal's started_at and finished_at), whatever their priorities.

# write_deps_job FILE FILLERS: top -> left, right -> bottom (priority 100); FILLERS 50 ms tasks
# at priority -1; last (priority 1000) after bottom and every filler. 5 + FILLERS tasks.
write_deps_job() {
  local fillers
  fillers=$(printf '50, %.0s' $(seq "$2")); fillers=${fillers%, }
  cat > "$1" <<TOML
[job]
name = "deps"
[[task]]
id = "top"
kernel = "sleep_ms"
params = { ms = 150 }
[[task]]
id = "left"
kernel = "sleep_ms"
params = { ms = 100 }
depends_on = ["top"]
[[task]]
id = "right"
kernel = "sleep_ms"
params = { ms = 30 }
depends_on = ["top"]
[[task]]
id = "bottom"
kernel = "sleep_ms"
params = { ms = 1 }
depends_on = ["left", "right"]
priority = 100
[[sweep]]
id = "filler"
kernel = "sleep_ms"
vary = { ms = [$fillers] }
priority = -1
[[task]]
id = "last"
command = "true"
depends_on = ["filler", "bottom"]
priority = 1000
TOML
}

# deps_order_violations DIR: one line per dependent that started before a dependency finished.
deps_order_violations() {
  sqlite3 -readonly -batch -noheader "$1/journal.sqlite" \
    "SELECT t.task_id || ' started before ' || d.task_id || ' finished' FROM tasks t JOIN tasks d ON
     (t.task_id IN ('left','right') AND d.task_id='top') OR (t.task_id='bottom' AND d.task_id IN ('left','right'))
     OR (t.task_id='last' AND (d.task_id LIKE 'filler.%' OR d.task_id='bottom'))
     WHERE t.started_at < d.finished_at"
}
