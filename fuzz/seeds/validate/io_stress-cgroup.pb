

/kubepods/pod1‚€€ */tmp8€€€Z"
teamstorage