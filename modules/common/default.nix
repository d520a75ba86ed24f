# Shared by every darwin and NixOS host: Nix itself, the host's identity, the tools everyone expects, and
# where the host's secrets come from.
{ pkgs, self, inventory, hostName, hostFacts, ... }:
let
  # The environment this host is deployed in, whose deploy key may log in to activate it.
  environments = builtins.filter (env: builtins.elem hostName inventory.environments.${env}.hosts)
    (builtins.attrNames inventory.environments);
  deployUser = if hostFacts.kind == "darwin" then builtins.head hostFacts.users else "root";
in
{
  imports = [ ./secrets.nix ];

  nix.settings = {
    experimental-features = [ "nix-command" "flakes" ];
    trusted-users = [ "root" ] ++ hostFacts.users;
  };

  # Deploy names the configuration after the host, and the health check compares this revision with the one
  # deployed; an uncommitted tree deploys as "dirty", which production refuses before it gets here.
  networking.hostName = hostName;
  system.configurationRevision = self.rev or "dirty";

  environment.systemPackages = with pkgs; [
    age
    curl
    git
    jq
    ripgrep
    sops
    ssh-to-age
  ];

  programs.zsh.enable = true;

  users.users.${deployUser}.openssh.authorizedKeys.keys =
    map (env: inventory.environments.${env}.deploy_key) environments;
}
