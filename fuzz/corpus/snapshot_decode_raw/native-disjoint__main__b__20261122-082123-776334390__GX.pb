 
GXbvm:main )6JÔJPêÈ
alpha%
b-2ratq-eQM_zslDZAC6rZvem¬Ëû‚¾æ
	b-3jYlNSvmBa3Rà(¼m—æ%
b-4O7VlCgPqXLW_FP_B:ehwfÑ\±kç 
b-J8uIKrTLKgwH5amZjP1gæ"

b-JA1oi-qnc_vbr855:W1F.&Ã€¤ç+

b-PasmOSc8HUVfXysOD4r612D93xfrA[:ÇéYè%
b-U8c5hqHHmdCo-zVniQO8d7c -væ)
b-_17mppOHrY1V18gjzIM9CKJI:tAÜYfàmç%
b-d505O-zJpf:JKdnJoaqBVMû±N?Dæ(
	b-evyjsCHw8RmxXThjjqnLvEdOMn#»ž»ç(
b-fnTgxiMlerxl-SvPLn9LZXHzd°ëÇë>Êæ 
b-kFizp6hAQ.eii5Ez4ªàŠlØç&
b-t54MBjTlxJrRp8kHYvo0ZKD}3Üw›'æ-
b-v:uytJcHXa5MGVkaN.5xZKvCcIYT7p=à0ê—sæ
b-vuP8LcRPpmZeÀX”'ÂUé
gamma
IuVwBR:2bŠ-üËŒMè$
N5SrYDnIpk_gDcKjuhb95jK4ôÁµè
Q:M	gcvjsIWG:ƒK©S(è
mDGyGANBL35aHKf2Šúmæ
tGzeQ4.s	Eaffug_Kp£ü!®‘è