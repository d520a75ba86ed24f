# Evaluation tests of every configuration: the names of the tests that fail (an empty list when all pass).
# `cairn run test` evaluates this with `nix eval --json .#lib.failedTests`; it needs nixpkgs.
{ self, inventory }:
let
  configurations = self.darwinConfigurations // self.nixosConfigurations;
  testsFor = name: configuration:
    let
      config = configuration.config;
      facts = inventory.hosts.${name};
    in
    {
      "${name}: hostName is the host's name" = config.networking.hostName == name;
      "${name}: the revision is recorded" = config.system.configurationRevision != null;
      "${name}: every inventory user has a home" =
        builtins.all (user: config.home-manager.users ? ${user}) facts.users;
      "${name}: secrets come from the host's own file" =
        builtins.baseNameOf (builtins.dirOf config.sops.defaultSopsFile) == name;
    };
  results = builtins.foldl' (all: name: all // testsFor name configurations.${name}) { }
    (builtins.attrNames configurations);
in
builtins.filter (test: !results.${test}) (builtins.attrNames results)
