#!/usr/bin/env bash
# The per-host steps of the tasks in tasks.toml: build, activate, check and roll back one host, and the checks
# a deploy makes of the tree first. Host facts (kind, target) come from the inventory through `cairn query`, so
# this script and flake.nix read the same file. cairn runs it with $CAIRN set; by hand, put cairn on PATH.
#
#   fleet.sh build HOST        build HOST's system closure (no activation)
#   fleet.sh test all          evaluate the configuration's tests (modules/tests.nix)
#   fleet.sh activate HOST     switch HOST to this tree's configuration (locally, or over ssh)
#   fleet.sh check HOST        HOST runs this tree's revision, and (NixOS) its services are up
#   fleet.sh rollback HOST     switch HOST back to its previous generation
#   fleet.sh preflight ENV     production: the tree is clean and pushed; elsewhere: a warning if it is not
#   fleet.sh update [INPUT…]   update the flake's inputs (all, or those named) and write what changed
#   fleet.sh status ENV [--json]  what each host of ENV runs, against this tree (drift), read over ssh
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

# ssh options for nixos-rebuild and darwin-rebuild: the pinned host keys, and the deploy key when the task was
# given one.
ssh_options() {
    export NIX_SSHOPTS="${pinned[*]} ${NIX_SSHOPTS:-}"
    if [ -n "${DEPLOY_SSH_KEY:-}" ]; then
        export NIX_SSHOPTS="-i $DEPLOY_SSH_KEY -o IdentitiesOnly=yes $NIX_SSHOPTS"
    fi
}

# Runs a command on HOST: here when its target is "local", else over ssh with the deploy key.
on_host() {
    local host="$1"; shift
    local target
    target="$(fact "$host" target)"
    if [ "$target" = local ]; then
        "$@"
    else
        local key=()
        [ -n "${DEPLOY_SSH_KEY:-}" ] && key=(-i "$DEPLOY_SSH_KEY" -o IdentitiesOnly=yes)
        ssh ${key[@]+"${key[@]}"} "${pinned[@]}" -o BatchMode=yes "$target" "$*"
    fi
}

command="${1:-}"
subject="${2:-}"
# `update` alone updates every input.
[ "$command" = update ] && [ -z "$subject" ] && subject=all
[ -n "$command" ] && [ -n "$subject" ] || die "usage: fleet.sh build|activate|check|rollback HOST, fleet.sh test all, or fleet.sh preflight ENV"

# The revision a host runs (what its configuration recorded), or nothing when it cannot be asked.
running_revision() {
    case "$(fact "$1" kind)" in
        darwin) on_host "$1" darwin-version --configuration-revision 2>/dev/null ;;
        nixos) on_host "$1" nixos-version --configuration-revision 2>/dev/null ;;
        *) return 1 ;;
    esac
}

case "$command" in
    trust)
        target="$(fact "$subject" target)"
        [ "$target" != local ] || die "$subject is deployed locally: there is no host key to trust"
        address="${target#*@}"
        scanned="$(ssh-keyscan -T 10 "$address" 2>/dev/null | grep -v '^#' || true)"
        [ -n "$scanned" ] || die "$subject ($address) did not answer ssh-keyscan: is it up, and is sshd listening?"
        touch "$known_hosts"
        if grep -q "^$address " "$known_hosts"; then
            if [ "$(grep "^$address " "$known_hosts" | sort)" = "$(echo "$scanned" | sort)" ]; then
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
            if running="$(running_revision "$host")" && [ -n "$running" ]; then
                if [ "$running" = "$want" ]; then state=current; else state=behind; drift=$((drift + 1)); fi
            else
                running=""
                state=unreachable
                drift=$((drift + 1))
            fi
            if $json; then
                $first || printf ','
                printf '{"host":"%s","kind":"%s","running":"%s","tree":"%s","state":"%s"}' \
                    "$host" "$(fact "$host" kind)" "$running" "$want" "$state"
            else
                case "$state" in
                    current) echo "$host  runs ${running:0:12}, this tree" ;;
                    behind) echo "$host  runs ${running:0:12}, this tree is ${want:0:12}: DRIFT (deploy:$subject brings it here)" ;;
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
        kind="$(fact "$subject" kind)"
        target="$(fact "$subject" target)"
        ssh_options
        case "$kind/$target" in
            darwin/local) sudo darwin-rebuild switch --flake ".#$subject" ;;
            darwin/*) darwin-rebuild switch --flake ".#$subject" --target-host "$target" ;;
            nixos/local) sudo nixos-rebuild switch --flake ".#$subject" ;;
            nixos/*) nixos-rebuild switch --flake ".#$subject" --target-host "$target" ;;
            *) die "$subject is a $kind host: it switches on the device itself (nix-on-droid switch)" ;;
        esac
        ;;
    check)
        # A flake built from an uncommitted tree records "dirty" as its revision (self.rev is unset).
        want="$(git rev-parse HEAD)"
        [ -z "$(git status --porcelain --untracked-files=no)" ] || want=dirty
        case "$(fact "$subject" kind)" in
            darwin) running="$(on_host "$subject" darwin-version --configuration-revision)" ;;
            nixos)
                running="$(on_host "$subject" nixos-version --configuration-revision)"
                state="$(on_host "$subject" systemctl is-system-running || true)"
                [ "$state" = running ] || die "$subject: systemd says the system is '$state', not 'running' (see: systemctl --failed)"
                ;;
            *) die "$subject cannot be checked remotely" ;;
        esac
        [ "$running" = "$want" ] || die "$subject runs revision '$running', not $want"
        echo "fleet: $subject runs $want"
        ;;
    rollback)
        kind="$(fact "$subject" kind)"
        target="$(fact "$subject" target)"
        ssh_options
        case "$kind/$target" in
            darwin/local) sudo darwin-rebuild --rollback ;;
            darwin/*) darwin-rebuild --rollback --target-host "$target" ;;
            nixos/local) sudo nixos-rebuild switch --rollback ;;
            nixos/*) nixos-rebuild switch --rollback --target-host "$target" ;;
            *) die "$subject cannot be rolled back remotely" ;;
        esac
        echo "fleet: $subject is back on its previous generation"
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
