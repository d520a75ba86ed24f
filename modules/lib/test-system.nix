# The test fleet's systems (tests/cli/fleet.rs): what mk-system.nix builds with nixpkgs, made of builtins only so
# Debian's Nix builds it offline. Each host's system is a real derivation (the builtin buildenv builder) whose
# tree names the host, its users and the revision of the tree it was built from, as a real system records its
# configurationRevision; deploys copy it over ssh and make it a generation of the host's system profile. The
# tests put this file in mk-system.nix's place; nothing else uses it.
{ self, inventory }:
let
  system = name: host: derivation {
    name = "${host.kind}-system-${name}";
    system = "builtin";
    builder = "builtin:buildenv";
    derivations = [ ];
    manifest = builtins.toFile "${name}-system.json" (builtins.toJSON {
      host = name;
      inherit (host) kind users;
      revision = self.rev or "dirty";
    });
  };
in
{
  darwin = name: host: { system = system name host; };
  nixos = name: host: { config.system.build.toplevel = system name host; };
}
