# sops-nix: each host decrypts its own secrets at activation with its SSH host key (whose age form,
# `ssh-to-age < /etc/ssh/ssh_host_ed25519_key.pub`, is the host's key in .sops.yaml). Nothing is decrypted at
# evaluation time, so the configuration builds without any key.
{ hostName, hostFacts, ... }:
let
  hostSecrets = ../../secrets/hosts/${hostName}/system.yaml;
in
{
  sops.age.sshKeyPaths = [ "/etc/ssh/ssh_host_ed25519_key" ];
  sops.defaultSopsFile = hostSecrets;
  sops.secrets = {
    # The nix-daemon's token for private binary caches and GitHub API limits.
    "nix/access_tokens" = { };
  } // builtins.listToAttrs (map
    (user: {
      name = "users/${user}/password_hash";
      value.neededForUsers = hostFacts.kind == "nixos";
    })
    hostFacts.users);
}
