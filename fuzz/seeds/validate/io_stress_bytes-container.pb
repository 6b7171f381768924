
containerd://3f2a9c1be0d4‚0€€€€Z"
teamstorage