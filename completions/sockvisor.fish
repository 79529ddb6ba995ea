# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_sockvisor_global_optspecs
    string join \n log-level= log-format= h/help V/version
end

function __fish_sockvisor_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_sockvisor_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_sockvisor_using_subcommand
    set -l cmd (__fish_sockvisor_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c sockvisor -n "__fish_sockvisor_needs_command" -l log-level -d 'Most detailed level logged to stderr. Default: info; warn for `run` without sockets on a terminal (an interactive init, whose output sockvisor\'s lines would interleave with, as tini prints nothing)' -r -f -a "error\t''
warn\t''
info\t''
debug\t''
trace\t''"
complete -c sockvisor -n "__fish_sockvisor_needs_command" -l log-format -d 'Log line format' -r -f -a "text\t''
json\t''"
complete -c sockvisor -n "__fish_sockvisor_needs_command" -s h -l help -d 'Print help'
complete -c sockvisor -n "__fish_sockvisor_needs_command" -s V -l version -d 'Print version'
complete -c sockvisor -n "__fish_sockvisor_needs_command" -f -a "run" -d 'Bind the listeners and run COMMAND as a supervised child'
complete -c sockvisor -n "__fish_sockvisor_needs_command" -f -a "upgrade" -d 'Start a new generation on the same sockets; retire the current one once the new one is ready. Prints progress; exits 0 on success'
complete -c sockvisor -n "__fish_sockvisor_needs_command" -f -a "status" -d 'Show generations, listeners and the last upgrade'
complete -c sockvisor -n "__fish_sockvisor_needs_command" -f -a "stop" -d 'Stop every generation gracefully, then sockvisor; returns when all have exited'
complete -c sockvisor -n "__fish_sockvisor_needs_command" -f -a "signal" -d 'Send a signal to the current generation'
complete -c sockvisor -n "__fish_sockvisor_needs_command" -f -a "scale" -d 'Change the number of worker processes of the serving generation: new workers go through readiness, removed ones drain. Later upgrades start the new count. Prints progress; exits 0 once done'
complete -c sockvisor -n "__fish_sockvisor_needs_command" -f -a "reexec" -d 'Replace sockvisor\'s own program in place (same pid, same children, same sockets), once the new binary has proved in a check run that it can resume the state; any other answer changes nothing. Prints the result; exits 0 once the new program serves'
complete -c sockvisor -n "__fish_sockvisor_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c sockvisor -n "__fish_sockvisor_using_subcommand run" -s l -l listen -d 'Socket to bind and pass to the child (repeatable; the order gives fds 3, 4, …). Without any, no LISTEN_* variables are set' -r
complete -c sockvisor -n "__fish_sockvisor_using_subcommand run" -l env-file -d 'Variables for the server from this file (repeatable; a later file overrides an earlier one, and both override sockvisor\'s own environment), read again for every worker started, so that an upgrade picks up a changed file. KEY=VALUE lines as systemd\'s EnvironmentFile= reads them (see docs/guide.md); a leading \'-\' (-/etc/app.env) makes the file optional' -r
complete -c sockvisor -n "__fish_sockvisor_using_subcommand run" -l metrics -d 'Serve Prometheus metrics (GET /metrics, OpenMetrics text) on this TCP address, e.g. 127.0.0.1:9100: generations, workers by state, upgrades, rollbacks, restarts and re-execs, each worker\'s memory and age, each TCP listener\'s accept queue, sockvisor\'s own memory and descriptors. Read at each scrape; no thread, no timer' -r
complete -c sockvisor -n "__fish_sockvisor_using_subcommand run" -l user -d 'Run the server as this user (name or uid): sockvisor binds the sockets as its own user (root, for ports below 1024), then every worker of every generation takes this identity before exec: supplementary groups from the user database, the group, the user, and HOME, USER and LOGNAME as login sets them. Needs root' -r
complete -c sockvisor -n "__fish_sockvisor_using_subcommand run" -l group -d 'The server\'s group (name or gid); default the user\'s own' -r
complete -c sockvisor -n "__fish_sockvisor_using_subcommand run" -s n -l workers -d 'Worker processes per generation (1 to 1024), each a child of sockvisor on the same sockets with SOCKVISOR_WORKER=0..N-1. A generation is ready when all its workers are; a worker that exits while its generation serves is replaced in its slot' -r
complete -c sockvisor -n "__fish_sockvisor_using_subcommand run" -l max-surge -d 'Upgrade workers one by one instead of all at once: at most K processes beyond --workers run at any moment, and each new worker that is ready retires one old worker (like einhorn\'s --max-upgrade-additional). Without it, all N new workers start and the old ones are stopped once all are ready' -r
complete -c sockvisor -n "__fish_sockvisor_using_subcommand run" -l worker-max-rss -d 'Replace a worker whose memory stays above SIZE (512M, 2G; K, M, G and T are powers of 1024): the resident memory (RSS) of the worker and every process under it, summed, over the limit at two samples in a row. A new worker starts in the same slot, and the old one gets the stop signal only once the new one is ready; if the new one fails, the old one keeps serving. At most --max-surge (default 1) at a time' -r
complete -c sockvisor -n "__fish_sockvisor_using_subcommand run" -l worker-max-age -d 'Replace a worker, the same way, once it has served this long, less up to a tenth (fixed for each slot and process) so that workers started together are not replaced together' -r
complete -c sockvisor -n "__fish_sockvisor_using_subcommand run" -l worker-sample-interval -d 'How often workers\' memory is sampled for --worker-max-rss (nothing is sampled without it)' -r
complete -c sockvisor -n "__fish_sockvisor_using_subcommand run" -l restart -d 'When the child exits on its own: restart it or exit with its status. Default: always when there are sockets to serve (a server\'s exit, even a clean one, is not a request to stop the service: that is `sockvisor stop`), never without any (an init exits with its child\'s status)' -r -f -a "never\t'Exit with the child\'s status'
on-failure\t'Restart after a non-zero exit or a death by signal; exit 0 after a clean exit'
always\t'Restart whatever the status'"
complete -c sockvisor -n "__fish_sockvisor_using_subcommand run" -l restart-delay -d 'Delay before the first restart; doubles after each consecutive failure' -r
complete -c sockvisor -n "__fish_sockvisor_using_subcommand run" -l restart-delay-max -d 'Longest restart delay; a child that ran this long resets the backoff' -r
complete -c sockvisor -n "__fish_sockvisor_using_subcommand run" -l stop-signal -d 'Signal that asks the child to stop gracefully (name or number)' -r
complete -c sockvisor -n "__fish_sockvisor_using_subcommand run" -l stop-timeout -d 'How long a stop of sockvisor may take before every remaining process group is killed with SIGKILL' -r
complete -c sockvisor -n "__fish_sockvisor_using_subcommand run" -l ready -d 'How a new generation shows it is ready: notify (READY=1 on NOTIFY_SOCKET), now, delay=DURATION (alive that long), or exec=COMMAND (a shell command that exits 0; SOCKVISOR_READY_PID holds the generation\'s pid). Default: notify when there are sockets to serve, now without any' -r
complete -c sockvisor -n "__fish_sockvisor_using_subcommand run" -l ready-timeout -d 'How long a new generation may take to become ready before it is stopped (and, in an upgrade, the old one keeps serving)' -r
complete -c sockvisor -n "__fish_sockvisor_using_subcommand run" -l drain-timeout -d 'How long a replaced generation may drain after the stop signal before its process group is killed with SIGKILL' -r
complete -c sockvisor -n "__fish_sockvisor_using_subcommand run" -l watch -d 'Development loop: upgrade when a file under PATH changes (a file, or a directory watched recursively; repeatable). Writes are settled for --watch-delay first; .git/, target/, node_modules/, __pycache__/ and editor swap files are ignored. A failed upgrade leaves the old generation serving: fix the file and save again' -r -F
complete -c sockvisor -n "__fish_sockvisor_using_subcommand run" -l watch-delay -d 'How long writes must settle before a change starts an upgrade' -r
complete -c sockvisor -n "__fish_sockvisor_using_subcommand run" -l watch-ignore -d 'Also ignore changed files whose name matches GLOB (* and ?; repeatable), e.g. \'*.log\'' -r
complete -c sockvisor -n "__fish_sockvisor_using_subcommand run" -l watchdog -d 'Watchdog for every worker, as systemd\'s WatchdogSec=: each gets WATCHDOG_USEC and WATCHDOG_PID and must send WATCHDOG=1 at least this often once ready; a worker that misses it is hung, and its generation is replaced without refusing connections. 0 turns it off; otherwise at least 100ms' -r
complete -c sockvisor -n "__fish_sockvisor_using_subcommand run" -l fdstore-max -d 'Keep up to N descriptors that generations hand over with FDSTORE=1 (systemd\'s FileDescriptorStoreMax=) and pass them to every later generation after the listeners, named in LISTEN_FDNAMES. 0 disables the store: passed descriptors are closed' -r
complete -c sockvisor -n "__fish_sockvisor_using_subcommand run" -l fd-env -d 'Also describe the sockets the way another socket manager does, so apps written for it run unchanged: einhorn (EINHORN_FD_COUNT, EINHORN_FD_n, its worker:ack counts as READY=1) or server-starter (SERVER_STARTER_PORT). Repeatable; systemd\'s variables are always set' -r -f -a "einhorn\t'einhorn: EINHORN_FD_COUNT, EINHORN_FD_n, EINHORN_FD_FAMILY_n, EINHORN_MASTER_PID, EINHORN_SOCK_PATH'
server-starter\t'Server::Starter: SERVER_STARTER_PORT, SERVER_STARTER_GENERATION'"
complete -c sockvisor -n "__fish_sockvisor_using_subcommand run" -l name -d 'Instance name; selects the control socket (/run/sockvisor/NAME.sock for root)' -r
complete -c sockvisor -n "__fish_sockvisor_using_subcommand run" -l control -d 'Control socket path, overriding the one derived from --name' -r -F
complete -c sockvisor -n "__fish_sockvisor_using_subcommand run" -l pidfile -d 'Write sockvisor\'s pid to this file (removed at exit). The pid stays the same across upgrades' -r -F
complete -c sockvisor -n "__fish_sockvisor_using_subcommand run" -l log-level -d 'Most detailed level logged to stderr. Default: info; warn for `run` without sockets on a terminal (an interactive init, whose output sockvisor\'s lines would interleave with, as tini prints nothing)' -r -f -a "error\t''
warn\t''
info\t''
debug\t''
trace\t''"
complete -c sockvisor -n "__fish_sockvisor_using_subcommand run" -l log-format -d 'Log line format' -r -f -a "text\t''
json\t''"
complete -c sockvisor -n "__fish_sockvisor_using_subcommand run" -l signal-group -d 'Forward signals to each worker\'s whole process group (the worker and what it started) instead of the worker alone, like tini\'s -g and dumb-init\'s default; `sockvisor signal` too. Stop and upgrade signals are not forwarded signals: the stop signal always goes to the worker'
complete -c sockvisor -n "__fish_sockvisor_using_subcommand run" -l no-listen-pid -d 'Leave LISTEN_PID out, for a command that forks before the server reads it (cargo run, npm start, poetry run, sh -c without exec), as systemfd --no-pid. The listenfd crate accepts a missing LISTEN_PID; libsystemd (sd_listen_fds) and go-systemd do not and see no sockets. Any process that inherits the environment may take the sockets'
complete -c sockvisor -n "__fish_sockvisor_using_subcommand run" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sockvisor -n "__fish_sockvisor_using_subcommand run" -s V -l version -d 'Print version'
complete -c sockvisor -n "__fish_sockvisor_using_subcommand upgrade" -l name -d 'Instance name; selects the control socket (/run/sockvisor/NAME.sock for root)' -r
complete -c sockvisor -n "__fish_sockvisor_using_subcommand upgrade" -l control -d 'Control socket path, overriding the one derived from --name' -r -F
complete -c sockvisor -n "__fish_sockvisor_using_subcommand upgrade" -l timeout -d 'Give up waiting for the result after this long (the operation itself goes on inside sockvisor); at most 8760h (one year)' -r
complete -c sockvisor -n "__fish_sockvisor_using_subcommand upgrade" -l log-level -d 'Most detailed level logged to stderr. Default: info; warn for `run` without sockets on a terminal (an interactive init, whose output sockvisor\'s lines would interleave with, as tini prints nothing)' -r -f -a "error\t''
warn\t''
info\t''
debug\t''
trace\t''"
complete -c sockvisor -n "__fish_sockvisor_using_subcommand upgrade" -l log-format -d 'Log line format' -r -f -a "text\t''
json\t''"
complete -c sockvisor -n "__fish_sockvisor_using_subcommand upgrade" -l json -d 'Print the protocol\'s JSON lines instead of text'
complete -c sockvisor -n "__fish_sockvisor_using_subcommand upgrade" -s h -l help -d 'Print help'
complete -c sockvisor -n "__fish_sockvisor_using_subcommand upgrade" -s V -l version -d 'Print version'
complete -c sockvisor -n "__fish_sockvisor_using_subcommand status" -l name -d 'Instance name; selects the control socket (/run/sockvisor/NAME.sock for root)' -r
complete -c sockvisor -n "__fish_sockvisor_using_subcommand status" -l control -d 'Control socket path, overriding the one derived from --name' -r -F
complete -c sockvisor -n "__fish_sockvisor_using_subcommand status" -l timeout -d 'Give up waiting for the answer after this long (exit 5); --check waits 5s' -r
complete -c sockvisor -n "__fish_sockvisor_using_subcommand status" -l log-level -d 'Most detailed level logged to stderr. Default: info; warn for `run` without sockets on a terminal (an interactive init, whose output sockvisor\'s lines would interleave with, as tini prints nothing)' -r -f -a "error\t''
warn\t''
info\t''
debug\t''
trace\t''"
complete -c sockvisor -n "__fish_sockvisor_using_subcommand status" -l log-format -d 'Log line format' -r -f -a "text\t''
json\t''"
complete -c sockvisor -n "__fish_sockvisor_using_subcommand status" -l json -d 'Print the status as JSON'
complete -c sockvisor -n "__fish_sockvisor_using_subcommand status" -l check -d 'Health check: exit 0 when a generation is ready and serving, 1 when none is (also when sockvisor cannot be reached), 4 when sockvisor answered that every control slot holds a client waiting for a result; prints nothing unless --verbose. For exec readiness and liveness probes'
complete -c sockvisor -n "__fish_sockvisor_using_subcommand status" -l verbose -d 'With --check, print one line saying why'
complete -c sockvisor -n "__fish_sockvisor_using_subcommand status" -s h -l help -d 'Print help'
complete -c sockvisor -n "__fish_sockvisor_using_subcommand status" -s V -l version -d 'Print version'
complete -c sockvisor -n "__fish_sockvisor_using_subcommand stop" -l name -d 'Instance name; selects the control socket (/run/sockvisor/NAME.sock for root)' -r
complete -c sockvisor -n "__fish_sockvisor_using_subcommand stop" -l control -d 'Control socket path, overriding the one derived from --name' -r -F
complete -c sockvisor -n "__fish_sockvisor_using_subcommand stop" -l timeout -d 'Give up waiting for the result after this long (the operation itself goes on inside sockvisor); at most 8760h (one year)' -r
complete -c sockvisor -n "__fish_sockvisor_using_subcommand stop" -l log-level -d 'Most detailed level logged to stderr. Default: info; warn for `run` without sockets on a terminal (an interactive init, whose output sockvisor\'s lines would interleave with, as tini prints nothing)' -r -f -a "error\t''
warn\t''
info\t''
debug\t''
trace\t''"
complete -c sockvisor -n "__fish_sockvisor_using_subcommand stop" -l log-format -d 'Log line format' -r -f -a "text\t''
json\t''"
complete -c sockvisor -n "__fish_sockvisor_using_subcommand stop" -l json -d 'Print the protocol\'s JSON lines instead of text'
complete -c sockvisor -n "__fish_sockvisor_using_subcommand stop" -s h -l help -d 'Print help'
complete -c sockvisor -n "__fish_sockvisor_using_subcommand stop" -s V -l version -d 'Print version'
complete -c sockvisor -n "__fish_sockvisor_using_subcommand signal" -l name -d 'Instance name; selects the control socket (/run/sockvisor/NAME.sock for root)' -r
complete -c sockvisor -n "__fish_sockvisor_using_subcommand signal" -l control -d 'Control socket path, overriding the one derived from --name' -r -F
complete -c sockvisor -n "__fish_sockvisor_using_subcommand signal" -l timeout -d 'Give up waiting for the answer after this long (exit 5)' -r
complete -c sockvisor -n "__fish_sockvisor_using_subcommand signal" -l log-level -d 'Most detailed level logged to stderr. Default: info; warn for `run` without sockets on a terminal (an interactive init, whose output sockvisor\'s lines would interleave with, as tini prints nothing)' -r -f -a "error\t''
warn\t''
info\t''
debug\t''
trace\t''"
complete -c sockvisor -n "__fish_sockvisor_using_subcommand signal" -l log-format -d 'Log line format' -r -f -a "text\t''
json\t''"
complete -c sockvisor -n "__fish_sockvisor_using_subcommand signal" -l json -d 'Print the protocol\'s JSON lines instead of text'
complete -c sockvisor -n "__fish_sockvisor_using_subcommand signal" -s h -l help -d 'Print help'
complete -c sockvisor -n "__fish_sockvisor_using_subcommand signal" -s V -l version -d 'Print version'
complete -c sockvisor -n "__fish_sockvisor_using_subcommand scale" -l name -d 'Instance name; selects the control socket (/run/sockvisor/NAME.sock for root)' -r
complete -c sockvisor -n "__fish_sockvisor_using_subcommand scale" -l control -d 'Control socket path, overriding the one derived from --name' -r -F
complete -c sockvisor -n "__fish_sockvisor_using_subcommand scale" -l timeout -d 'Give up waiting for the result after this long (the operation itself goes on inside sockvisor); at most 8760h (one year)' -r
complete -c sockvisor -n "__fish_sockvisor_using_subcommand scale" -l log-level -d 'Most detailed level logged to stderr. Default: info; warn for `run` without sockets on a terminal (an interactive init, whose output sockvisor\'s lines would interleave with, as tini prints nothing)' -r -f -a "error\t''
warn\t''
info\t''
debug\t''
trace\t''"
complete -c sockvisor -n "__fish_sockvisor_using_subcommand scale" -l log-format -d 'Log line format' -r -f -a "text\t''
json\t''"
complete -c sockvisor -n "__fish_sockvisor_using_subcommand scale" -l json -d 'Print the protocol\'s JSON lines instead of text'
complete -c sockvisor -n "__fish_sockvisor_using_subcommand scale" -s h -l help -d 'Print help'
complete -c sockvisor -n "__fish_sockvisor_using_subcommand scale" -s V -l version -d 'Print version'
complete -c sockvisor -n "__fish_sockvisor_using_subcommand reexec" -l binary -d 'The new sockvisor binary; default: the path sockvisor was started from, looked up again (so a package upgrade that replaced it is picked up)' -r -F
complete -c sockvisor -n "__fish_sockvisor_using_subcommand reexec" -l name -d 'Instance name; selects the control socket (/run/sockvisor/NAME.sock for root)' -r
complete -c sockvisor -n "__fish_sockvisor_using_subcommand reexec" -l control -d 'Control socket path, overriding the one derived from --name' -r -F
complete -c sockvisor -n "__fish_sockvisor_using_subcommand reexec" -l timeout -d 'Give up waiting for the result after this long (the operation itself goes on inside sockvisor); at most 8760h (one year)' -r
complete -c sockvisor -n "__fish_sockvisor_using_subcommand reexec" -l log-level -d 'Most detailed level logged to stderr. Default: info; warn for `run` without sockets on a terminal (an interactive init, whose output sockvisor\'s lines would interleave with, as tini prints nothing)' -r -f -a "error\t''
warn\t''
info\t''
debug\t''
trace\t''"
complete -c sockvisor -n "__fish_sockvisor_using_subcommand reexec" -l log-format -d 'Log line format' -r -f -a "text\t''
json\t''"
complete -c sockvisor -n "__fish_sockvisor_using_subcommand reexec" -l json -d 'Print the protocol\'s JSON lines instead of text'
complete -c sockvisor -n "__fish_sockvisor_using_subcommand reexec" -s h -l help -d 'Print help'
complete -c sockvisor -n "__fish_sockvisor_using_subcommand reexec" -s V -l version -d 'Print version'
complete -c sockvisor -n "__fish_sockvisor_using_subcommand help; and not __fish_seen_subcommand_from run upgrade status stop signal scale reexec help" -f -a "run" -d 'Bind the listeners and run COMMAND as a supervised child'
complete -c sockvisor -n "__fish_sockvisor_using_subcommand help; and not __fish_seen_subcommand_from run upgrade status stop signal scale reexec help" -f -a "upgrade" -d 'Start a new generation on the same sockets; retire the current one once the new one is ready. Prints progress; exits 0 on success'
complete -c sockvisor -n "__fish_sockvisor_using_subcommand help; and not __fish_seen_subcommand_from run upgrade status stop signal scale reexec help" -f -a "status" -d 'Show generations, listeners and the last upgrade'
complete -c sockvisor -n "__fish_sockvisor_using_subcommand help; and not __fish_seen_subcommand_from run upgrade status stop signal scale reexec help" -f -a "stop" -d 'Stop every generation gracefully, then sockvisor; returns when all have exited'
complete -c sockvisor -n "__fish_sockvisor_using_subcommand help; and not __fish_seen_subcommand_from run upgrade status stop signal scale reexec help" -f -a "signal" -d 'Send a signal to the current generation'
complete -c sockvisor -n "__fish_sockvisor_using_subcommand help; and not __fish_seen_subcommand_from run upgrade status stop signal scale reexec help" -f -a "scale" -d 'Change the number of worker processes of the serving generation: new workers go through readiness, removed ones drain. Later upgrades start the new count. Prints progress; exits 0 once done'
complete -c sockvisor -n "__fish_sockvisor_using_subcommand help; and not __fish_seen_subcommand_from run upgrade status stop signal scale reexec help" -f -a "reexec" -d 'Replace sockvisor\'s own program in place (same pid, same children, same sockets), once the new binary has proved in a check run that it can resume the state; any other answer changes nothing. Prints the result; exits 0 once the new program serves'
complete -c sockvisor -n "__fish_sockvisor_using_subcommand help; and not __fish_seen_subcommand_from run upgrade status stop signal scale reexec help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
