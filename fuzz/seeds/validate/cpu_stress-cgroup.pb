

/kubepods/pod1ò2Z"
teamstorage