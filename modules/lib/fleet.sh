#!/usr/bin/env bash
# The per-host steps of the tasks in tasks.toml: build, activate, check and roll back one host, and the checks
# a deploy makes of the tree first. Host facts (kind, target) come from the inventory through `cairn query`, so
# this script and flake.nix read the same file. cairn runs it with $CAIRN set; by hand, put cairn on PATH.
#
#   fleet.sh build HOST        build HOST's system closure (no activation)
#   fleet.sh test all          evaluate the configuration's tests (modules/tests.nix)
#   fleet.sh activate HOST     switch HOST to this tree's configuration: copy it over ssh, set the system
#                              profile's next generation, run it
#   fleet.sh check HOST        HOST runs this tree's revision, and (NixOS) its services are up
#   fleet.sh rollback HOST     roll HOST's system profile back to its previous generation and run that
#   fleet.sh preflight ENV     production: the tree is clean and pushed; elsewhere: a warning if it is not
#   fleet.sh update [INPUT…]   update the flake's inputs (all, or those named) and write what changed
#   fleet.sh status ENV [--json]  what each host of ENV runs (revision and generation), against this tree (drift)
#   fleet.sh trust HOST        first contact: record HOST's ssh host keys in modules/known_hosts (to review)
#
# ssh only ever trusts the host keys in modules/known_hosts (committed, reviewed like any change): a host whose
# key is not there, or has changed, is refused — never `StrictHostKeyChecking=no`.
set -euo pipefail

cairn="${CAIRN:-cairn}"
inventory="${FLEET_INVENTORY:-modules/inventory.toml}"
# What build and test do where Nix is missing: fail (the default) or skip, said out loud; never pretend.
missing_nix="${FLEET_MISSING_NIX:-fail}"
nix_flags=(--extra-experimental-features "nix-command flakes")

fact() { "$cairn" query "$inventory" "hosts.$1.$2"; }
die() { echo "fleet: $*" >&2; exit 1; }

require_nix() {
    command -v nix >/dev/null 2>&1 && return 0
    if [ "$missing_nix" = skip ]; then
        echo "fleet: SKIPPED: $1: nix is not installed on this machine (--set nix=skip); nothing was built"
        exit 0
    fi
    die "$1: nix is not installed on this machine. Install Nix (https://nixos.org/download), run this on a machine that has it (NIXY), or pass \`--set nix=skip\` to skip it explicitly."
}

attribute() {
    case "$(fact "$1" kind)" in
        darwin) echo "darwinConfigurations.$1.system" ;;
        nixos) echo "nixosConfigurations.$1.config.system.build.toplevel" ;;
        *) die "$1 is a $(fact "$1" kind) host: it is built and switched on the device itself" ;;
    esac
}

known_hosts="${FLEET_KNOWN_HOSTS:-$PWD/modules/known_hosts}"
pinned=(-o "UserKnownHostsFile=$known_hosts" -o StrictHostKeyChecking=yes)
# Where a host keeps its system generations (a test host's sshd names another, inside its own store).
profile_on_host='"${FLEET_SYSTEM_PROFILE:-/nix/var/nix/profiles/system}"'

# ssh options for every connection, ours and `nix copy`'s (NIX_SSHOPTS): the pinned host keys, the deploy key
# when the task was given one, and whatever NIX_SSHOPTS already says (`-F ssh_config`, `-p PORT`, …).
ssh_options() {
    export NIX_SSHOPTS="${pinned[*]} -o BatchMode=yes ${NIX_SSHOPTS:-}"
    if [ -n "${DEPLOY_SSH_KEY:-}" ]; then
        export NIX_SSHOPTS="-i $DEPLOY_SSH_KEY -o IdentitiesOnly=yes $NIX_SSHOPTS"
    fi
}

# Runs a shell command line on HOST: here when its target is "local", else over ssh with ssh_options's options.
on_host() {
    local host="$1"; shift
    local target
    target="$(fact "$host" target)"
    if [ "$target" = local ]; then
        sh -c "$*"
    else
        # NIX_SSHOPTS is a list of words, as Nix reads it.
        # shellcheck disable=SC2086
        ssh ${NIX_SSHOPTS:-} "$target" "$*"
    fi
}

# Says why HOST could not be reached, from ssh's exit (255) and message, then stops.
unreachable() {
    die "$1 ($(fact "$1" target)) cannot be reached over ssh: $2. Is it up and is sshd listening? A changed host key is refused: see 'fleet.sh trust $1'"
}

# ---- The one stand-in -----------------------------------------------------------------------------------------
# Everything a deploy does is real: the build, the copy over ssh into the host's store, the new generation of its
# system profile, the rollback to the previous one. Only running a generation is not possible in the tests (it
# would reconfigure this machine): a test host, whose sshd sets FLEET_TEST_HOST to a directory of its own,
# records the generation it "runs" there, reports its revision from it, and is unhealthy while
# $FLEET_TEST_HOST/unhealthy exists. These three functions are the whole seam; real hosts never set the variable.

# Runs the system at store path $2 on host $1 (after it became the current generation).
activate_generation() {
    local host="$1" path="$2" real
    case "$(fact "$host" kind)/$(fact "$host" target)" in
        nixos/local) real="sudo $path/bin/switch-to-configuration switch" ;;
        nixos/*) real="$path/bin/switch-to-configuration switch" ;;
        darwin/local) real="if [ -x $path/activate-user ]; then $path/activate-user; fi; sudo $path/activate" ;;
        darwin/*) real="if [ -x $path/activate-user ]; then $path/activate-user; fi; sudo -n $path/activate" ;;
        *) die "$host is a $(fact "$host" kind) host: it switches on the device itself (nix-on-droid switch)" ;;
    esac
    on_host "$host" "if [ -n \"\${FLEET_TEST_HOST:-}\" ]; then ln -sfn $path \"\$FLEET_TEST_HOST/current-system\"; else $real; fi"
}

# The revision host $1 runs (what its configuration recorded), or nothing when it cannot be asked.
running_revision() {
    local real
    case "$(fact "$1" kind)" in
        darwin) real="darwin-version --configuration-revision" ;;
        nixos) real="nixos-version --configuration-revision" ;;
        *) return 1 ;;
    esac
    on_host "$1" "if [ -n \"\${FLEET_TEST_HOST:-}\" ]; then sed -n 's/.*\"revision\":\"\([^\"]*\)\".*/\1/p' \"\$FLEET_TEST_HOST/current-system/manifest.nix\"; else $real; fi" 2>/dev/null
}

# What systemd says of NixOS host $1: `running` when it is healthy.
system_state() {
    on_host "$1" "if [ -n \"\${FLEET_TEST_HOST:-}\" ]; then if [ -e \"\$FLEET_TEST_HOST/unhealthy\" ]; then echo degraded; else echo running; fi; else systemctl is-system-running; fi" || true
}
# ---- end of the stand-in ----------------------------------------------------------------------------------------

# The number of the current generation of host $1's system profile, or nothing.
generation() {
    on_host "$1" "readlink $profile_on_host" 2>/dev/null | sed -n 's/.*-\([0-9][0-9]*\)-link$/\1/p'
}

# Builds host $1's system (at once when build:HOST did already) and prints its store path.
system_path() {
    local attr
    attr="$(attribute "$1")"
    nix "${nix_flags[@]}" build --no-link --json ".#$attr" | sed -n 's/.*"out":"\([^"]*\)".*/\1/p'
}

command="${1:-}"
subject="${2:-}"
# `update` alone updates every input.
[ "$command" = update ] && [ -z "$subject" ] && subject=all
[ -n "$command" ] && [ -n "$subject" ] || die "usage: fleet.sh build|activate|check|rollback HOST, fleet.sh test all, or fleet.sh preflight ENV"

case "$command" in
    trust)
        target="$(fact "$subject" target)"
        [ "$target" != local ] || die "$subject is deployed locally: there is no host key to trust"
        # Where ssh would connect, through any ssh config NIX_SSHOPTS names (`-F`): host name and port.
        # shellcheck disable=SC2086
        resolved="$(ssh ${NIX_SSHOPTS:-} -G "$target" 2>/dev/null || true)"
        hostname="$(echo "$resolved" | sed -n 's/^hostname //p')"
        port="$(echo "$resolved" | sed -n 's/^port //p')"
        [ -n "$hostname" ] || hostname="${target#*@}"
        [ -n "$port" ] || port=22
        # known_hosts names a host on another port than 22 as [host]:port, as ssh-keyscan prints it.
        address="$hostname"
        [ "$port" = 22 ] || address="[$hostname]:$port"
        scanned="$(ssh-keyscan -T 10 -p "$port" "$hostname" 2>/dev/null | grep -v '^#' || true)"
        [ -n "$scanned" ] || die "$subject ($address) did not answer ssh-keyscan: is it up, and is sshd listening?"
        touch "$known_hosts"
        pattern="^$(printf '%s' "$address" | sed 's/[].[]/\\&/g') "
        if grep -q "$pattern" "$known_hosts"; then
            if [ "$(grep "$pattern" "$known_hosts" | sort)" = "$(echo "$scanned" | sort)" ]; then
                echo "fleet: $subject ($address) is already trusted with these keys"
                exit 0
            fi
            die "$subject ($address) offers host keys other than those in $known_hosts: a reinstalled machine, or someone in between. Compare the fingerprints on the machine itself (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), then remove its lines from $known_hosts and run this again"
        fi
        echo "$scanned" >> "$known_hosts"
        echo "fleet: recorded the host keys of $subject ($address) in $known_hosts:"
        echo "$scanned" | ssh-keygen -lf - | sed 's/^/  /'
        echo "fleet: check these fingerprints on $subject itself (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub) before committing the file"
        ;;
    status)
        json=false
        [ "${3:-}" = --json ] && json=true
        want="$(git rev-parse HEAD)"
        [ -z "$(git status --porcelain --untracked-files=no)" ] || want=dirty
        hosts="$("$cairn" query "$inventory" "environments.$subject.hosts")" || die "no environment $subject in $inventory"
        ssh_options
        drift=0
        first=true
        $json && printf '['
        for host in $hosts; do
            number=""
            if running="$(running_revision "$host")" && [ -n "$running" ]; then
                if [ "$running" = "$want" ]; then state=current; else state=behind; drift=$((drift + 1)); fi
                number="$(generation "$host" || true)"
            else
                running=""
                state=unreachable
                drift=$((drift + 1))
            fi
            shown_generation=""
            [ -n "$number" ] && shown_generation=" (generation $number)"
            if $json; then
                $first || printf ','
                printf '{"host":"%s","kind":"%s","running":"%s","generation":%s,"tree":"%s","state":"%s"}' \
                    "$host" "$(fact "$host" kind)" "$running" "${number:-null}" "$want" "$state"
            else
                case "$state" in
                    current) echo "$host  runs ${running:0:12}$shown_generation, this tree" ;;
                    behind) echo "$host  runs ${running:0:12}$shown_generation, this tree is ${want:0:12}: DRIFT (deploy:$subject brings it here)" ;;
                    unreachable) echo "$host  cannot be asked what it runs (unreachable, or not deployed by this fleet yet)" ;;
                esac
            fi
            first=false
        done
        if $json; then
            printf ']\n'
        else
            echo "fleet: $subject: $drift of $(echo "$hosts" | wc -w | tr -d ' ') host(s) differ from this tree"
        fi
        ;;
    update)
        require_nix "updating the flake's inputs"
        before="$(mktemp)"
        trap 'rm -f "$before"' EXIT
        if [ -f flake.lock ]; then cp flake.lock "$before"; else echo '{"nodes":{}}' > "$before"; fi
        if [ "$subject" = all ]; then
            nix "${nix_flags[@]}" flake update
        else
            for input in "${@:2}"; do
                nix "${nix_flags[@]}" flake lock --update-input "$input"
            done
        fi
        # What changed, read by Nix itself from both lock files: name, old and new revision (or hash), and when
        # the new one was made.
        changes="$(nix "${nix_flags[@]}" eval --raw --impure --expr "
          let
            old = (builtins.fromJSON (builtins.readFile $before)).nodes;
            new = (builtins.fromJSON (builtins.readFile $PWD/flake.lock)).nodes;
            id = l: l.rev or l.narHash or \"?\";
            changed = builtins.filter
              (n: n != \"root\" && (new.\${n}.locked or {}) != ((old.\${n} or {}).locked or {}))
              (builtins.attrNames new);
            line = n: let o = (old.\${n} or {}).locked or {}; w = new.\${n}.locked; in
              \"\${n} \${if o == {} then \"(new)\" else id o} \${id w} \${toString (w.lastModified or 0)}\";
          in builtins.concatStringsSep \"\\n\" (map line changed)")"
        summary="${FLEET_UPDATE_SUMMARY:-.cairn/update-summary.md}"
        mkdir -p "$(dirname "$summary")"
        {
            echo "## Flake input updates"
            echo
            if [ -z "$changes" ]; then
                echo "No input changed."
            else
                echo "| input | from | to | date |"
                echo "|---|---|---|---|"
                while read -r name from to modified; do
                    # GNU date takes -d @SECONDS, BSD date (macOS) -r SECONDS.
                    day="$(date -u -d "@$modified" +%F 2>/dev/null || date -u -r "$modified" +%F)"
                    echo "| $name | ${from:0:12} | ${to:0:12} | $day |"
                done <<< "$changes"
            fi
        } > "$summary"
        cat "$summary"
        echo "fleet: the summary is in $summary (for the pull request's description)"
        ;;
    build)
        require_nix "building $subject"
        attr="$(attribute "$subject")"
        echo "fleet: building .#$attr"
        nix "${nix_flags[@]}" build --no-link ".#$attr"
        ;;
    test)
        require_nix "evaluating the configuration's tests"
        failed="$(nix "${nix_flags[@]}" eval --json .#lib.failedTests)"
        [ "$failed" = "[]" ] || die "failed evaluation tests: $failed"
        echo "fleet: every evaluation test passes"
        ;;
    activate)
        # What nixos-rebuild and darwin-rebuild do, step by step, so each step is real where it can be: build,
        # copy the closure into the host's store over ssh, make it the next generation of the host's system
        # profile, run it. A failure before the last step leaves the host on its previous generation.
        require_nix "deploying $subject"
        target="$(fact "$subject" target)"
        ssh_options
        path="$(system_path "$subject")"
        [ -n "$path" ] || die "$subject: building its system gave no store path"
        # From the profile switch to the end of the activation, Ctrl-C waits (this script and the ssh it runs
        # ignore it): the host is never left with a new profile it does not run.
        if [ "$target" = local ]; then
            trap '' INT TERM HUP
            sudo nix-env -p /nix/var/nix/profiles/system --set "$path"
        else
            copied="$(nix "${nix_flags[@]}" copy --to "ssh://$target" "$path" 2>&1)" || unreachable "$subject" "copying $path failed: $(echo "$copied" | tail -n 3 | tr '\n' ' ')"
            trap '' INT TERM HUP
            on_host "$subject" "nix-env -p $profile_on_host --set $path" || die "$subject: its system profile could not be set to $path"
        fi
        activate_generation "$subject" "$path"
        trap - INT TERM HUP
        echo "fleet: $subject: generation $(generation "$subject") runs $path"
        ;;
    check)
        # A flake built from an uncommitted tree records "dirty" as its revision (self.rev is unset).
        want="$(git rev-parse HEAD)"
        [ -z "$(git status --porcelain --untracked-files=no)" ] || want=dirty
        ssh_options
        case "$(fact "$subject" kind)" in
            darwin) running="$(running_revision "$subject")" || unreachable "$subject" "it did not say what it runs" ;;
            nixos)
                running="$(running_revision "$subject")" || unreachable "$subject" "it did not say what it runs"
                state="$(system_state "$subject")"
                [ "$state" = running ] || die "$subject: systemd says the system is '$state', not 'running' (see: systemctl --failed)"
                ;;
            *) die "$subject cannot be checked remotely" ;;
        esac
        [ "$running" = "$want" ] || die "$subject runs revision '$running', not $want"
        echo "fleet: $subject runs $want"
        ;;
    rollback)
        # The previous generation of the host's system profile becomes current again (a real profile rollback),
        # then runs.
        target="$(fact "$subject" target)"
        ssh_options
        # As for activate: the rolled-back generation runs before Ctrl-C is heard.
        trap '' INT TERM HUP
        if [ "$target" = local ]; then
            sudo nix-env -p /nix/var/nix/profiles/system --rollback
            path="$(readlink -f /nix/var/nix/profiles/system)"
        else
            path="$(on_host "$subject" "nix-env -p $profile_on_host --rollback >&2 && readlink -f $profile_on_host")" ||
                unreachable "$subject" "its profile could not be rolled back"
        fi
        activate_generation "$subject" "$path"
        trap - INT TERM HUP
        echo "fleet: $subject is back on its previous generation ($(generation "$subject"): $path)"
        ;;
    preflight)
        dirty="$(git status --porcelain --untracked-files=normal)"
        upstream="$(git rev-parse --abbrev-ref --symbolic-full-name '@{upstream}' 2>/dev/null || true)"
        unpushed=""
        [ -n "$upstream" ] && unpushed="$(git rev-list "$upstream..HEAD")"
        if [ "$subject" = production ]; then
            [ -z "$dirty" ] || die "production deploys only a committed tree; these files differ from HEAD:
$dirty
commit or stash them first"
            [ -n "$upstream" ] || die "production deploys only a pushed revision, and this branch has no upstream: push it (git push -u)"
            [ -z "$unpushed" ] || die "production deploys only a pushed revision; $(echo "$unpushed" | wc -l) commit(s) are not on $upstream yet: git push"
            echo "fleet: the tree is clean and $(git rev-parse --short HEAD) is on $upstream"
        else
            [ -z "$dirty" ] || echo "fleet: warning: deploying $subject from a tree with uncommitted changes (it will report revision 'dirty')"
            echo "fleet: $subject may deploy $(git rev-parse --short HEAD)"
        fi
        ;;
    *) die "unknown command '$command': build, test, activate, check, rollback or preflight" ;;
esac
