 
GXavm:main )<«≈$KPкО
records
del-both 
№*ые
del-newer-a 

№*ые
del-older-alive-b

№*ые

del-only-a 
№*ые
del-only-a-ts0 

del-only-b 
№*ые
live-newer-alive-a

№*ые
live-older-a 

№*ые
rnd-0vb0t&х+ые
rnd-1 @*"+ые
rnd-2vb2I•)ф*ые
rnd-3vb3ћє«+ые
rnd-4vb4?TN+ые
rnd-5vb5Йmpо*ые
rnd-6va6Кl€*ые
rnd-7 Х	л	+ые